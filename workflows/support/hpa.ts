import type { AutoscalingSpec } from '../../contracts/autoscaling';
import { durationMs } from './duration';

/** The HPA's tolerance: a load within 10 % of the target changes nothing, so replicas do not flap on noise. */
const TOLERANCE = 0.1;
/** The HPA's default scale-up bound per pass: double, or 4 more, whichever is more. */
export const maxStepUp = (current: number): number => Math.max(2 * current, current + 4);

export interface Recommendation {
  at: number;
  desired: number;
}

export interface HpaPass {
  settings: AutoscalingSpec;
  current: number;
  load: { concurrency: number; tokensPerSecond: number };
  now: number;
  /** Time since the version's last request. */
  idleMs: number;
  /** A gateway holds requests for the version: at least one replica, whatever the load says yet. */
  wake: boolean;
  /** This pass's and the earlier ones' recommendations; those older than the stabilisation window are dropped. */
  recommendations: Recommendation[];
}

export interface HpaDecision {
  /** Load per current replica; null without a replica. */
  metric: number | null;
  /** ceil(load / target) within tolerance and the bounds, before stabilisation and the step bound. */
  desired: number;
  /** The replicas to set (before the GPU quota). */
  next: number;
  toZero: boolean;
  recommendations: Recommendation[];
  message: string;
}

/**
 * One pass of the Kubernetes HPA rule: desired = ceil(load / target per replica), unchanged within the tolerance;
 * within min..max; a scale-down only to the highest recommendation of the stabilisation window (scaleDownDelay); a
 * scale-up bounded per pass; 0 once idle for scaleToZeroAfter when minReplicas is 0 (its own delay, no window).
 */
export function hpaPass(p: HpaPass): HpaDecision {
  const { settings: s, current } = p;
  const concurrency = 'concurrency' in s.target;
  const load = concurrency ? p.load.concurrency : p.load.tokensPerSecond;
  const target = 'concurrency' in s.target ? s.target.concurrency : s.target.tokensPerSecond;
  const withinTolerance = current > 0 && Math.abs(load / (current * target) - 1) <= TOLERANCE;
  const toZero = s.minReplicas === 0 && !p.wake && p.idleMs >= durationMs(s.scaleToZeroAfter);
  const wanted = withinTolerance ? current : Math.ceil(load / target);
  const desired = toZero ? 0 : Math.min(s.maxReplicas, Math.max(wanted, s.minReplicas, current > 0 || p.wake ? 1 : 0));
  const recommendations = [...p.recommendations, { at: p.now, desired }].filter(
    (r) => r.at > p.now - durationMs(s.scaleDownDelay),
  );
  let next = desired;
  if (desired < current && !toZero) next = Math.min(current, Math.max(...recommendations.map((r) => r.desired)));
  if (next > current) next = Math.min(next, maxStepUp(current));
  return {
    metric: current > 0 ? load / current : null,
    desired,
    next,
    toZero,
    recommendations,
    message:
      toZero && current > 0
        ? `no traffic for ${Math.round(p.idleMs / 1000)} s`
        : `${concurrency ? 'concurrency' : 'tokens/s'} ${load.toFixed(2)} over the window, target ${target} per replica`,
  };
}
