import type { PlatformActivityDeps } from '../../activities';
import { conversionS3Env } from '../../activities/conversion';
import type { Config } from '../../common/config';
import { encodeMlp, type Mlp } from '../../common/mlp';
import { conversionProgram } from '../../deploy/dev/job-programs';
import { LOCAL_PROCESS_ANNOTATIONS, startLocalJobRunner, type LocalJobRunner } from '../../deploy/dev/kube/local-jobs';


/**
 * Runs the conversion Jobs' pods as local processes: both conversion images map to the toolchain's python in
 * deploy/convert/, as the images' entrypoint runs the same files. The TensorRT image's program then finds no
 * trtexec and no GPU here and reports its target not_run.
 */
export function startConversionJobRunner(kubeconfigPath: string, logDir: string, config: Pick<Config, 'LLMHUB_CONVERT_IMAGE' | 'LLMHUB_CONVERT_TENSORRT_IMAGE'>): Promise<LocalJobRunner> {
  const program = conversionProgram();
  return startLocalJobRunner({ kubeconfigPath, logDir, images: { [config.LLMHUB_CONVERT_IMAGE]: program, [config.LLMHUB_CONVERT_TENSORRT_IMAGE]: program } });
}

/** Activity deps for conversion Jobs on a local cluster whose pods run as local processes (the runner above). */
export const localConversionDeps = (config: Config): Pick<PlatformActivityDeps, 'conversionJobs' | 'jobPodAnnotationsOf'> => ({
  conversionJobs: { image: config.LLMHUB_CONVERT_IMAGE, tensorrtImage: config.LLMHUB_CONVERT_TENSORRT_IMAGE, s3Env: conversionS3Env(config) },
  jobPodAnnotationsOf: () => ({ ...LOCAL_PROCESS_ANNOTATIONS }),
});

/** An llmhub-mlp with reproducible weights, uniform in ±1/sqrt(inputs) (a small linear-congruential generator). */
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
