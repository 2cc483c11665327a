import { json } from 'node:stream/consumers';
import { ClusterFailures } from '../../contracts/cluster';
import {
  ConversionFailures,
  type ConversionInput,
  type ConversionResult,
  type ConversionStep,
  stateOf,
  type StepReport,
  type TargetResult,
} from '../../contracts/conversion';
import { KubernetesObjectApi, type KubeConfig, type V1EnvVar } from '@kubernetes/client-node';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { Pool } from 'pg';
import { objectUri, type ObjectRef, type ObjectStore } from '../../common/objectstore';
import { conversionClaimOf, conversionInputOf, type ConversionPlanRequest } from '../../common/conversion-plan';
import { PlatformError } from '../../common/errors';
import type { ConversionRecord, ConversionStore } from '../../common/store/conversions';
import { GpuQuotaStore } from '../../common/store/gpu-quota';
import { LineageStore } from '../../common/store/lineage';
import type { RegistryStore } from '../../common/store/registry';
import type { StorageScopeStore } from '../../common/store/storage-scope';
import type { S3Credentials } from '../../common/storage-admin';
import { tenantS3Env } from '../kubernetes/tenant-s3';
import { requireInScope } from '../storage/scope';
import { deleteIfPresent, isStatus, serverSideApply } from '../kubernetes/client';
import { ensureTenantNamespace, type TenantNamespaceDeps } from '../kubernetes/tenant-namespace';
import type { PodPlacement } from '../kubernetes/manifests';
import { waitForGpuClaim } from '../fine-tune';
import { conversionJobName, jobState, renderConversionJob, stopUnfinishedJobs } from './jobs';

export interface ConversionJobSettings {
  /** Image repositories (no tag) of the CPU steps and of the TensorRT build; the tag is the toolchain version. */
  image: string;
  tensorrtImage: string;
  /** S3 settings for the programs (s3SettingsEnv); the tenant's own keys are added per Job, never the platform's. */
  s3Env: V1EnvVar[];
  /** GPU product for the TensorRT build's node selector; none: any GPU node. */
  gpuProduct?: string;
}

export interface ConversionActivityDeps extends TenantNamespaceDeps {
  objects: ObjectStore;
  conversions: ConversionStore;
  storageScopes: StorageScopeStore;
  /** The tenant's own S3 keys, put into its namespace for its Jobs (undefined: no storage admin, none given). */
  tenantS3Credentials(tenantId: string): S3Credentials | undefined;
  kubeConfigOf(cluster: string): KubeConfig | undefined;
  /** Pod-template annotations of the cluster's Jobs (LLMHUB_CLUSTERS jobPodAnnotations; the local job runner's marker in tests). */
  jobPodAnnotationsOf(cluster: string): Record<string, string>;
  /** Where the cluster's pods go (LLMHUB_CLUSTERS nodeSelector, tolerations). */
  podPlacementOf(cluster: string): PodPlacement;
  conversionJobs: ConversionJobSettings;
  db: Pool;
  registry: RegistryStore;
}

/** How often a wait for a running memoised conversion reads its row: one indexed lookup, cheap next to a build. */
const MEMO_POLL_MS = 5_000;

const stepName = (s: ConversionStep): string =>
  s.kind === 'export' || s.kind === 'tensorrt' ? s.kind : `${s.kind}-${s.target}`;

/** Triton model directories need numeric versions: a numeric registry version is kept, any other becomes 1. */
export const tritonVersionOf = (version: string): string => (/^[1-9][0-9]{0,8}$/.test(version) ? version : '1');
export const tritonModelOf = (modelId: string, target: string): string => `${modelId}-${target}`;

/**
 * Where a conversion's objects live, under one prefix per (tenant, memo key): `work/` (intermediate models and
 * samples, removed at the end), `results/` (each Job's result object) and `triton/` (the published model repository).
 */
export function conversionLayout(bucket: string, input: ConversionInput) {
  const base = `conversions/${input.tenantId}/${input.memoKey}`;
  const ref = (key: string): ObjectRef => ({ bucket, key: `${base}/${key}` });
  const tv = tritonVersionOf(input.version);
  return {
    workPrefix: `${base}/work/`,
    exported: ref('work/exported.onnx'),
    optimized: (target: string) => ref(`work/${target}.onnx`),
    samples: ref('work/samples.json'),
    result: (job: string) => ref(`results/${job}.json`),
    repository: ref('triton'),
    modelFile: (target: string) =>
      ref(
        `triton/${tritonModelOf(input.modelId, target)}/${tv}/${target === 'tensorrt' ? 'model.plan' : 'model.onnx'}`,
      ),
    config: (target: string) => ref(`triton/${tritonModelOf(input.modelId, target)}/config.pbtxt`),
    tritonVersion: tv,
  };
}

/** A Triton model configuration for one published target; the batch dimension is dynamic in every exported model. */
export function tritonConfig(
  name: string,
  target: string,
  dims: { inputDim: number; outputDim: number },
  version: string,
): string {
  return [
    `name: "${name}"`,
    `platform: "${target === 'tensorrt' ? 'tensorrt_plan' : 'onnxruntime_onnx'}"`,
    'max_batch_size: 64',
    `input [ { name: "input" data_type: TYPE_FP32 dims: [ ${dims.inputDim} ] } ]`,
    `output [ { name: "output" data_type: TYPE_FP32 dims: [ ${dims.outputDim} ] } ]`,
    `version_policy: { specific: { versions: [ ${version} ] } }`,
    `instance_group [ { kind: ${target === 'tensorrt' ? 'KIND_GPU' : 'KIND_CPU'} } ]`,
    '',
  ].join('\n');
}

/** The TensorRT engine build's Job takes one whole GPU. */
const TENSORRT_GPUS = 1;
/** A conversion run's GPU claim, apart from the fine-tune runs' claims keyed by their workflow ids. */
const gpuClaimKey = (input: ConversionInput): string => `conversion:${input.workflowId}`;
/** Only a run with a TensorRT target claims a GPU; its release stays a tombstone, so a build still queued cannot claim after the run ended. */
const releaseGpuOf = async (quotas: GpuQuotaStore, input: ConversionInput): Promise<void> => {
  if (input.options.targets.includes('tensorrt'))
    await quotas.release(input.tenantId, gpuClaimKey(input), 'conversion');
};

export const createConversionActivities = (deps: ConversionActivityDeps) => {
  const { objects, conversions, storageScopes, conversionJobs: jobs } = deps;
  const lineage = new LineageStore(deps.db);
  const quotas = new GpuQuotaStore(deps.db);
  /** A conversion's objects live in its tenant's bucket, which its Jobs' keys reach. */
  const layoutOf = (input: ConversionInput) => conversionLayout(storageScopes.bucketOf(input.tenantId), input);

  const removeObjects = async (bucket: string, prefix: string): Promise<void> => {
    for (const o of await objects.list(bucket, prefix)) await objects.delete({ bucket, key: o.key });
  };
  /** Intermediate models and samples; the results/ objects stay, as the record of what each Job reported. */
  const removeWork = (input: ConversionInput): Promise<void> => {
    const l = layoutOf(input);
    return removeObjects(l.exported.bucket, l.workPrefix);
  };

  const readReport = async (ref: ObjectRef): Promise<StepReport | undefined> =>
    (await objects.head(ref)) ? ((await json(await objects.getStream(ref))) as StepReport) : undefined;

  /** The program's flags: every input and output an S3 URI under the conversion's prefix. */
  function programArgs(input: ConversionInput, step: ConversionStep, resultRef: ObjectRef): string[] {
    const l = layoutOf(input);
    const v = input.options.validation;
    const result = ['--result', objectUri(resultRef)];
    const samples = [
      ...(v.samples ? ['--samples', objectUri(l.samples)] : []),
      '--sample-count',
      String(v.sampleCount),
      '--seed',
      String(v.seed),
    ];
    switch (step.kind) {
      case 'export':
        return ['export_onnx.py', '--weights', input.artifactUri, '--out', objectUri(l.exported), ...result];
      case 'optimize':
        return [
          'optimize.py',
          '--target',
          step.target,
          '--model',
          objectUri(l.exported),
          '--out',
          objectUri(l.optimized(step.target)),
          ...result,
        ];
      case 'validate':
        return [
          'validate.py',
          '--target',
          step.target,
          '--model',
          objectUri(l.optimized(step.target)),
          '--weights',
          input.artifactUri,
          '--tolerance',
          String(v.tolerance[step.target]),
          ...samples,
          '--publish-to',
          objectUri(l.modelFile(step.target)),
          ...result,
        ];
      case 'profile':
        return [
          'profile.py',
          '--target',
          step.target,
          '--model',
          objectUri(l.modelFile(step.target)),
          '--runs',
          String(input.options.profile.runs),
          '--batch',
          String(input.options.profile.batch),
          ...result,
        ];
      case 'tensorrt':
        return [
          'build_engine.py',
          '--model',
          objectUri(l.exported),
          '--weights',
          input.artifactUri,
          '--precision',
          input.options.precision,
          '--tolerance',
          String(v.tolerance.tensorrt),
          ...samples,
          '--runs',
          String(input.options.profile.runs),
          '--publish-to',
          objectUri(l.modelFile('tensorrt')),
          ...result,
        ];
    }
  }

  return {
    /**
     * Runs one conversion step as a Kubernetes Job and returns what its program reported. Re-running after a worker
     * crash finds the same Job (named after the workflow id and step) and keeps waiting for it, heartbeating.
     * A program that reported a result and then exited non-zero (a correctness check out of tolerance) is an outcome,
     * returned; one that left no result, or reported an error, fails the step with the reason.
     */
    async runConversionStep(input: ConversionInput, step: ConversionStep): Promise<StepReport> {
      const ctx = Context.current();
      const kc = deps.kubeConfigOf(input.cluster);
      if (!kc)
        throw ApplicationFailure.nonRetryable(
          `cluster '${input.cluster}' is not configured`,
          ClusterFailures.unknownCluster,
        );
      const { workflowId } = input;
      const name = conversionJobName(workflowId, stepName(step));
      const namespace = deps.namespaceOf(input.tenantId);
      await requireInScope(storageScopes, input.tenantId, [input.artifactUri]);
      const l = layoutOf(input);
      const resultRef = l.result(name);
      const samples = input.options.validation.samples;
      if (samples && (step.kind === 'validate' || step.kind === 'tensorrt'))
        await objects.put(l.samples, JSON.stringify(samples), 'application/json');
      const gpu = step.kind === 'tensorrt';
      // The GPU build waits its turn in the tenant's GPU queue (shared with fine-tunes) before its Job exists; the
      // claim is held until the run ends (completeConversion, failConversion), right after its last step.
      if (gpu)
        await waitForGpuClaim(quotas, {
          tenantId: input.tenantId,
          workflowId: gpuClaimKey(input),
          gpus: TENSORRT_GPUS,
          priority: 0,
          kind: 'conversion',
        });
      const cluster = KubernetesObjectApi.makeApiClient(kc);
      await ensureTenantNamespace(cluster, input.tenantId, deps);
      const s3Keys = await tenantS3Env(cluster, namespace, input.tenantId, deps.tenantS3Credentials(input.tenantId));
      // Re-applying the same Job on a retried attempt changes nothing: the attempt finds its own Job again.
      await serverSideApply(
        cluster,
        renderConversionJob({
          name,
          namespace,
          tenantId: input.tenantId,
          modelId: input.modelId,
          version: input.version,
          workflowId,
          memoKey: input.memoKey,
          step: stepName(step),
          image: `${gpu ? jobs.tensorrtImage : jobs.image}:${input.toolchainVersion}`,
          args: programArgs(input, step, resultRef),
          env: [...jobs.s3Env, ...s3Keys, { name: 'PYTHONDONTWRITEBYTECODE', value: '1' }],
          podAnnotations: deps.jobPodAnnotationsOf(input.cluster),
          placement: deps.podPlacementOf(input.cluster),
          ...(gpu ? { gpu: jobs.gpuProduct ? { product: jobs.gpuProduct } : {} } : {}),
          // Counted from the Job's start, so it also bounds a GPU build that waits for a free node.
          activeDeadlineSeconds: gpu ? 3 * 3600 : 3600,
        }),
      );
      for (;;) {
        const state = await jobState(kc, namespace, name).catch((err: unknown) => {
          // Deleted under a waiting attempt: by a cancel (the run is over) or by hand (a retry submits it again).
          if (isStatus(err, 404))
            throw ApplicationFailure.retryable(
              `Job ${namespace}/${name} was deleted before it finished`,
              ConversionFailures.jobDeleted,
            );
          throw err;
        });
        if (state.done) {
          const report = await readReport(resultRef);
          if (report?.ok) return report;
          const why =
            report?.error ??
            `Job ${namespace}/${name} ${state.succeeded ? 'completed' : `failed (${state.detail})`} without a result`;
          throw ApplicationFailure.nonRetryable(
            `conversion step ${stepName(step)}: ${why}`,
            ConversionFailures.stepFailed,
            { job: name, namespace },
          );
        }
        ctx.heartbeat({ job: name, state: state.detail });
        try {
          // ctx.sleep ends early when the workflow cancels the activity (seen through the heartbeat).
          await ctx.sleep(1_000);
        } catch (err) {
          // A cancelled conversion leaves no Job working (or holding a GPU) behind.
          if (ctx.cancellationSignal.aborted)
            await deleteIfPresent(cluster, { apiVersion: 'batch/v1', kind: 'Job', metadata: { name, namespace } });
          throw err;
        }
      }
    },

    /**
     * Writes config.pbtxt for each published target, records the outcome and registers the artifacts on the model
     * version (one transaction), then removes the work files. Idempotent: a retry writes the same.
     */
    async completeConversion(
      input: ConversionInput,
      targets: TargetResult[],
      dims: { inputDim: number; outputDim: number },
    ): Promise<ConversionResult> {
      const l = layoutOf(input);
      const done: TargetResult[] = [];
      for (const t of targets) {
        if (t.status !== 'published') {
          done.push(t);
          continue;
        }
        const name = tritonModelOf(input.modelId, t.target);
        await objects.put(l.config(t.target), tritonConfig(name, t.target, dims, l.tritonVersion), 'text/plain');
        done.push({ ...t, tritonModel: name, configUri: objectUri(l.config(t.target)) });
      }
      const result: ConversionResult = {
        state: stateOf(done),
        targets: done,
        tritonRepositoryUri: objectUri(l.repository),
      };
      await conversions.complete(input.tenantId, input.workflowId, result);
      const published = done.filter((t) => t.status === 'published' && t.artifact);
      if (published.length > 0) {
        await lineage.record({
          tenantId: input.tenantId,
          modelId: input.modelId,
          version: input.version,
          kind: 'conversion',
          parent: null,
          workflowId: input.workflowId,
          details: {
            tritonRepositoryUri: result.tritonRepositoryUri,
            artifacts: published.map((t) => ({
              kind: t.target,
              uri: t.artifact!.uri,
              sha256: t.artifact!.sha256,
              tritonModel: t.tritonModel,
            })),
            toolchainVersion: input.toolchainVersion,
            memoKey: input.memoKey,
          },
        });
      }
      await removeWork(input);
      await releaseGpuOf(quotas, input);
      return result;
    },

    /**
     * What POST /v1/conversions does before its start, for a version that exists only now (a pipeline's fine-tune
     * output): resolve it, compute the memo key and claim the conversion row. A memo hit answers the conversion that
     * holds the key, so no second build starts; a retry finds its own claim and goes on.
     */
    async prepareConversion(
      r: ConversionPlanRequest,
    ): Promise<{ input: ConversionInput; memo: ConversionRecord | null }> {
      let input: ConversionInput;
      try {
        input = await conversionInputOf(deps.registry, r);
      } catch (err) {
        if (err instanceof PlatformError)
          throw ApplicationFailure.nonRetryable(err.message, ConversionFailures.refused);
        throw err;
      }
      const { existing } = await conversions.claim(deps.db, r.tenantId, conversionClaimOf(input));
      return { input, memo: existing && existing.workflowId !== input.workflowId ? existing : null };
    },

    /**
     * Waits for a conversion that holds the memo key (a memo hit still running) to end, and answers its row: the row
     * is the memo, and a run that breaks marks it `error` on its way out. Heartbeats every poll, so a lost worker's
     * wait resumes on another one; the heartbeat also delivers the caller's cancellation.
     */
    async awaitConversion(tenantId: string, conversionId: string): Promise<ConversionRecord> {
      const ctx = Context.current();
      for (;;) {
        const row = await conversions.get(tenantId, conversionId);
        // Only a conversion whose start failed loses its row: there is no outcome to wait for.
        if (!row)
          throw ApplicationFailure.nonRetryable(
            `conversion '${conversionId}' no longer exists`,
            ConversionFailures.refused,
          );
        if (row.state !== 'running') return row;
        ctx.heartbeat({ workflowId: row.workflowId, state: row.state });
        await ctx.sleep(MEMO_POLL_MS);
      }
    },

    /**
     * The run broke or was cancelled: its unfinished Jobs are deleted (their pods' programs end with them), its work
     * files and whatever a check had already published into the Triton layout are removed, and only then is the memo
     * key given up with the reason, so a new request never builds into a prefix still being cleaned. A retry that
     * finds the key already given up leaves the prefix alone: by then it may be the next build's.
     */
    async failConversion(input: ConversionInput, reason: string): Promise<void> {
      const row = await conversions.get(input.tenantId, input.conversionId);
      if (row?.workflowId === input.workflowId && row.state === 'running') {
        const kc = deps.kubeConfigOf(input.cluster);
        if (kc) await stopUnfinishedJobs(kc, deps.namespaceOf(input.tenantId), input.memoKey, input.workflowId, 60_000);
        const l = layoutOf(input);
        await removeObjects(l.repository.bucket, l.workPrefix);
        await removeObjects(l.repository.bucket, `${l.repository.key}/`);
      }
      await conversions.markError(input.tenantId, input.workflowId, reason);
      await releaseGpuOf(quotas, input);
    },
  };
};

export type ConversionActivities = ReturnType<typeof createConversionActivities>;
