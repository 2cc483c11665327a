import { Context } from '@temporalio/activity';
import { FineTuneFailures, type FineTuneInput, RunObjects } from '../../contracts/fine-tune';
import { ApplicationFailure } from '@temporalio/common';
import type { Pool } from 'pg';
import { objectUri, parseObjectUri, sha256Of, type ObjectStore } from '../../common/objectstore';
import { GpuQuotaStore } from '../../common/store/gpu-quota';
import { LineageStore } from '../../common/store/lineage';
import { inTransaction } from '../../common/store/pool';
import type { RegistryStore } from '../../common/store/registry';
import type { StorageScopeStore } from '../../common/store/storage-scope';
import { requireInScope } from '../storage/scope';

export interface FineTuneActivityDeps {
  db: Pool;
  registry: RegistryStore;
  objects: ObjectStore;
  storageScopes: StorageScopeStore;
}

export interface ResolvedFineTune {
  baseArtifactUri: string;
  baseChecksum: string | null;
  datasetSha256: string;
  /** s3://<tenant's bucket>/fine-tunes/<id>/: where the trainer writes progress, checkpoints and the output. */
  runPrefix: string;
}

/** Heads an object that must exist (else `missing`, non-retryable) and gives its head and SHA-256. */
async function describeObject(
  objects: ObjectStore,
  uri: string,
  missing: (uri: string) => ApplicationFailure,
  onProgress: (bytes: number, totalBytes: number) => void,
) {
  const ref = parseObjectUri(uri);
  const head = await objects.head(ref);
  if (!head) throw missing(uri);
  return { head, sha256: `sha256:${await sha256Of(objects, ref, head, (bytes) => onProgress(bytes, head.sizeBytes))}` };
}

const outputMissing = (uri: string) =>
  ApplicationFailure.nonRetryable(`the trainer reported success but wrote no ${uri}`, FineTuneFailures.outputMissing);

/**
 * Waits in the tenant's GPU queue until the claim is granted, heartbeating its position (visible in the Temporal UI
 * as the pending activity's details). Throws non-retryably once the claim was released: its run has ended.
 */
export async function waitForGpuClaim(
  quotas: GpuQuotaStore,
  c: Parameters<GpuQuotaStore['tryClaim']>[0],
): Promise<{ quota: number; inUse: number }> {
  const ctx = Context.current();
  for (;;) {
    const s = await quotas.tryClaim(c);
    if (s.released)
      throw ApplicationFailure.nonRetryable(
        `the GPU claim of ${c.workflowId} was released: the run has ended`,
        FineTuneFailures.claimReleased,
      );
    if (s.granted) return { quota: s.quota, inUse: s.inUse };
    ctx.heartbeat({ position: s.position, quota: s.quota, inUse: s.inUse });
    // Ends early (with a cancellation) when the workflow is cancelled; the workflow then releases the claim.
    await ctx.sleep(1_000);
  }
}

export const createFineTuneActivities = ({ db, registry, objects, storageScopes }: FineTuneActivityDeps) => {
  const quotas = new GpuQuotaStore(db);
  const lineage = new LineageStore(db);
  return {
    /** Checks again what the API checked (the base may have changed since) and hashes the dataset for the lineage. */
    async resolveFineTune(input: FineTuneInput, workflowId: string): Promise<ResolvedFineTune> {
      const base = await registry.getVersion(input.tenantId, input.base.modelId, input.base.version);
      if (!base || base.state !== 'ready') {
        throw ApplicationFailure.nonRetryable(
          `base version ${input.base.modelId}@${input.base.version} is ${base?.state ?? 'not registered'}`,
          FineTuneFailures.baseVersionNotReady,
        );
      }
      const existing = await registry.getVersion(input.tenantId, input.output.modelId, input.output.version);
      if (existing && existing.workflowId !== workflowId) {
        throw ApplicationFailure.nonRetryable(
          `version ${input.output.modelId}@${input.output.version} already exists`,
          FineTuneFailures.outputVersionExists,
        );
      }
      await requireInScope(storageScopes, input.tenantId, [input.datasetUri]);
      const ctx = Context.current();
      const dataset = await describeObject(
        objects,
        input.datasetUri,
        (uri) =>
          ApplicationFailure.nonRetryable(
            `dataset ${uri} does not exist in object storage`,
            FineTuneFailures.datasetNotFound,
          ),
        (bytes, totalBytes) => ctx.heartbeat({ hashedBytes: bytes, totalBytes }),
      );
      return {
        baseArtifactUri: base.artifactUri,
        baseChecksum: base.checksum,
        datasetSha256: dataset.sha256,
        runPrefix: `s3://${storageScopes.bucketOf(input.tenantId)}/fine-tunes/${input.fineTuneId}/`,
      };
    },

    /** The run's claim is keyed by its workflow id, so a retry keeps its place in the queue. */
    async waitForGpus(c: {
      tenantId: string;
      workflowId: string;
      gpus: number;
      priority: number;
    }): Promise<{ quota: number; inUse: number }> {
      return waitForGpuClaim(quotas, c);
    },

    async releaseGpus(tenantId: string, workflowId: string): Promise<void> {
      await quotas.release(tenantId, workflowId);
    },

    /**
     * Registers the merged weights as a ready version with its lineage, in one transaction (idempotent: a retry
     * finds the version and the lineage entry in place).
     */
    async registerFineTunedVersion(
      input: FineTuneInput,
      workflowId: string,
      run: ResolvedFineTune & { checkpointUri: string | null; resumptions: number },
    ): Promise<{ artifactUri: string; checksum: string }> {
      await requireInScope(
        storageScopes,
        input.tenantId,
        [run.runPrefix, ...(run.checkpointUri ? [run.checkpointUri] : [])],
        'write',
      );
      const ctx = Context.current();
      const prefix = parseObjectUri(run.runPrefix);
      const artifactUri = objectUri({ bucket: prefix.bucket, key: `${prefix.key}${RunObjects.output}` });
      const beat = (bytes: number) => ctx.heartbeat({ hashedBytes: bytes });
      const { head, sha256: checksum } = await describeObject(objects, artifactUri, outputMissing, beat);
      const checkpointChecksum = run.checkpointUri
        ? (await describeObject(objects, run.checkpointUri, outputMissing, beat)).sha256
        : null;
      const { tenantId, output } = input;
      await inTransaction(db, async (tx) => {
        await registry.insertVersion(tx, tenantId, {
          modelId: output.modelId,
          version: output.version,
          artifactUri,
          workflowId,
        });
        await lineage.record(
          {
            tenantId,
            modelId: output.modelId,
            version: output.version,
            kind: 'fine_tune',
            parent: { ...input.base },
            workflowId,
            details: {
              base: { ...input.base, artifactUri: run.baseArtifactUri, checksum: run.baseChecksum },
              dataset: { uri: input.datasetUri, sha256: run.datasetSha256 },
              method: input.method,
              hyperparameters: input.hyperparameters,
              resources: input.resources,
              artifact: { uri: artifactUri, sha256: checksum },
              checkpoint: run.checkpointUri ? { uri: run.checkpointUri, sha256: checkpointChecksum } : null,
              runPrefix: run.runPrefix,
              resumptions: run.resumptions,
            },
          },
          tx,
        );
      });
      await registry.markVersionReady(tenantId, output.modelId, output.version, {
        sizeBytes: head.sizeBytes,
        checksum,
        etag: head.etag,
      });
      return { artifactUri, checksum };
    },
  };
};

export type FineTuneActivities = ReturnType<typeof createFineTuneActivities>;
