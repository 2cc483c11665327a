import type { AutoscalerStatus } from '../../contracts/autoscaling';

/**
 * Waits until the version is at `replicas` (its spec and the autoscaler's last decision) after its load changed at
 * `since` (epoch ms). Bounded by the autoscaler's own passes, not by wall-clock time: a loaded machine makes the passes
 * slower, not more numerous, so `passes` passes since the change without reaching it is a failure on any machine.
 */
export async function untilReplicas(
  read: () => Promise<{ status: AutoscalerStatus | undefined; replicas: number | undefined }>,
  since: number,
  replicas: number,
  passes: number,
): Promise<AutoscalerStatus> {
  for (;;) {
    const { status, replicas: now } = await read();
    if (status && now === replicas && status.decisions.at(-1)?.applied === replicas) return status;
    const after = status?.decisions.filter((d) => d.at > since) ?? [];
    if (after.length > passes)
      throw new Error(
        `${now} replicas, not ${replicas}, after ${after.length} autoscaler passes since the load changed: ${JSON.stringify(after.slice(-5))}`,
      );
    await new Promise((r) => setTimeout(r, 200));
  }
}
