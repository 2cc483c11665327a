import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { PlatformActivityDeps } from '../../activities';
import { s3SettingsEnv } from '../../activities/kubernetes/tenant-s3';
import type { Config } from '../../common/config';
import { encodeMlp, type Mlp } from '../../deploy/trainers/reference/mlp';
import { conversionProgram } from '../../deploy/dev/job-programs';
import {
  LOCAL_PROCESS_ANNOTATIONS,
  startLocalJobRunner,
  type LocalJobRunner,
  type LocalProgram,
} from '../../deploy/dev/kube/local-jobs';
import { bearer, uniqueId, type TestPlatform, type TestTenant } from './platform';

/**
 * Runs the conversion Jobs' pods as local processes: both conversion images map to the toolchain's python in
 * deploy/convert/, as the images' entrypoint runs the same files. The TensorRT image's program then finds no
 * trtexec and no GPU here and reports its target not_run.
 */
export function startConversionJobRunner(
  kubeconfigPath: string,
  logDir: string,
  config: Pick<Config, 'LLMHUB_CONVERT_IMAGE' | 'LLMHUB_CONVERT_TENSORRT_IMAGE'>,
  more: { holdDir?: string; onEvent?: (message: string) => void } = {},
): Promise<LocalJobRunner> {
  const program = more.holdDir ? heldProgram(conversionProgram(), more.holdDir) : conversionProgram();
  return startLocalJobRunner({
    kubeconfigPath,
    logDir,
    images: { [config.LLMHUB_CONVERT_IMAGE]: program, [config.LLMHUB_CONVERT_TENSORRT_IMAGE]: program },
    onEvent: more.onEvent,
  });
}

/**
 * The program, held before it starts for as long as `<holdDir>/<Job name>` exists (the Job name is the basename of
 * the program's `--result` object), so a test can keep one step's Job running as long as it needs, without timing.
 */
function heldProgram(program: LocalProgram, holdDir: string): LocalProgram {
  const script = [
    'for a in "$@"; do case "$a" in */results/*.json) job=$(basename "$a" .json) ;; esac; done',
    'while [ -n "$job" ] && [ -e "$0/$job" ]; do sleep 0.1; done',
    'exec "$@"',
  ].join('\n');
  return { command: 'sh', args: ['-c', script, holdDir, program.command, ...(program.args ?? [])], cwd: program.cwd };
}

/** Activity deps for conversion Jobs on a local cluster whose pods run as local processes (the runner above). */
export const localConversionDeps = (
  config: Config,
): Pick<PlatformActivityDeps, 'conversionJobs' | 'jobPodAnnotationsOf'> => ({
  conversionJobs: {
    image: config.LLMHUB_CONVERT_IMAGE,
    tensorrtImage: config.LLMHUB_CONVERT_TENSORRT_IMAGE,
    s3Env: s3SettingsEnv(config),
  },
  jobPodAnnotationsOf: () => ({ ...LOCAL_PROCESS_ANNOTATIONS }),
});

/** An llmhub-mlp with reproducible weights, uniform in ±1/sqrt(inputs) (a small linear-congruential generator). */
/** Registers `modelId` version 1 for the tenant with the small seeded MLP the conversion tests convert, and waits for the registration. */
export async function registerSeededMlp(p: TestPlatform, tenant: TestTenant, modelId: string): Promise<void> {
  const key = `${tenant.id}/${modelId}/1/model.safetensors`;
  await p.objects.put({ bucket: tenant.bucket, key }, seededMlp([16, 64, 4], 7));
  const model = await p.app.inject({
    method: 'POST',
    url: '/v1/models',
    headers: bearer(tenant.keys.developer),
    payload: { id: modelId, name: modelId },
  });
  if (model.statusCode !== 201) throw new Error(`registering model ${modelId}: ${model.statusCode} ${model.body}`);
  const reg = await p.app.inject({
    method: 'POST',
    url: `/v1/models/${modelId}/versions`,
    headers: bearer(tenant.keys.developer),
    payload: { version: '1', artifactUri: `s3://${tenant.bucket}/${key}` },
  });
  await p.temporal.workflow.getHandle(reg.json().workflowId).result();
}

export function seededMlp(sizes: number[], seed: number): Buffer {
  let s = seed >>> 0;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const mlp: Mlp = sizes.slice(1).map((outputs, i) => {
    const inputs = sizes[i]!;
    const scale = 1 / Math.sqrt(inputs);
    return {
      inputs,
      outputs,
      weight: Float32Array.from({ length: outputs * inputs }, () => (2 * next() - 1) * scale),
      bias: Float32Array.from({ length: outputs }, () => (2 * next() - 1) * 0.1),
    };
  });
  return encodeMlp(mlp);
}

/**
 * A conversion test file's own Job images, run only by its own runner (so no other file's runner starts their pods),
 * each step's program held while the test holds that Job: `hold(name)` before the Job starts, `release(name)` to let
 * it run. `started(namespace, job)` counts how often the runner started a program for that Job's pods.
 */
export async function startHeldConversionJobs(kubeconfigPath: string, dataDir: string, config: Config) {
  const image = `registry.invalid/llmhub/${uniqueId('convert-held')}`;
  const images = { ...config, LLMHUB_CONVERT_IMAGE: image, LLMHUB_CONVERT_TENSORRT_IMAGE: `${image}-tensorrt` };
  const holdDir = await mkdtemp(path.join(dataDir, 'conversion-holds-'));
  const events: string[] = [];
  const runner = await startConversionJobRunner(kubeconfigPath, path.join(dataDir, 'conversion-jobs'), images, {
    holdDir,
    onEvent: (m) => events.push(m),
  });
  return {
    /** The configuration (images) a worker of this file runs conversions with. */
    config: images,
    events,
    hold: (job: string) => writeFile(path.join(holdDir, job), ''),
    release: (job: string) => rm(path.join(holdDir, job), { force: true }),
    started: (namespace: string, job: string) =>
      events.filter((e) => e.startsWith(`started ${namespace}/${job}-`)).length,
    stop: () => runner.stop(),
  };
}
