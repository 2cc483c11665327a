import { describe, expect, it } from '@jest/globals';
import { renderTrainingJob, trainingJobName, type TrainingJobSpec } from '../../activities/kubernetes/jobs';
import { renderConversionJob } from '../../activities/conversion/jobs';
import { clustersOf } from '../../common/config';
import type { PodPlacement } from '../../activities/kubernetes/manifests';
import { DEFAULT_HYPERPARAMETERS, HYPERPARAMETER_BOUNDS } from '../../contracts/fine-tune';
import {
  decodeMlp,
  encodeMlp,
  forward,
  meanSquaredError,
  parseDataset,
  type Mlp,
} from '../../deploy/trainers/reference/mlp';

const spec = (resources: Partial<TrainingJobSpec['resources']>): TrainingJobSpec => ({
  cluster: 'local',
  tenantId: 'acme',
  modelId: 'llama',
  version: 'base-ft-1',
  workflowId: 'fine-tune/acme/k1',
  fineTuneId: 'k1',
  attempt: 2,
  resources: { gpuCount: 2, cpu: '4', memory: '16Gi', ...resources },
  env: { LLMHUB_RUN_PREFIX: 's3://b/p/' },
  deadlineSeconds: 3600,
});
const img = {
  image: 'llmhub/trainer-hf:1',
  env: [{ name: 'AWS_SECRET_ACCESS_KEY', valueFrom: { secretKeyRef: { name: 's3', key: 'AWS_SECRET_ACCESS_KEY' } } }],
};

describe('training Job manifest', () => {
  it('asks for whole GPUs of a product, tolerates the GPU taint, leaves retries to the workflow', () => {
    const job = renderTrainingJob(spec({ gpuProduct: 'NVIDIA-L4' }), 'llmhub-acme', img, {
      'llmhub.dev/kwok-behaviour': 'local-process',
    });
    expect(job.metadata?.name).toBe(trainingJobName('k1', 2));
    expect(job.spec).toMatchObject({ backoffLimit: 0, activeDeadlineSeconds: 3600 });
    const pod = job.spec!.template;
    expect(pod.spec?.restartPolicy).toBe('Never');
    expect(pod.spec?.nodeSelector).toEqual({ 'nvidia.com/gpu.product': 'NVIDIA-L4' });
    expect(pod.spec?.containers[0]?.resources?.limits).toEqual({ cpu: '4', memory: '16Gi', 'nvidia.com/gpu': '2' });
    expect(pod.metadata?.annotations).toMatchObject({
      'llmhub.dev/kwok-behaviour': 'local-process',
      'llmhub.dev/workflow-id': 'fine-tune/acme/k1',
    });
    expect(pod.metadata?.labels).toMatchObject({
      'llmhub.dev/workflow-id': 'fine-tune_acme_k1',
      'llmhub.dev/fine-tune-attempt': '2',
    });
    // Credentials stay references; the run's contract comes as plain values.
    expect(pod.spec?.containers[0]?.env).toEqual([img.env[0], { name: 'LLMHUB_RUN_PREFIX', value: 's3://b/p/' }]);
  });

  it('asks for MIG instances instead of whole GPUs when a profile is given', () => {
    const job = renderTrainingJob(spec({ gpuCount: 1, migProfile: '1g.10gb' }), 'ns', img, {});
    expect(job.spec!.template.spec?.containers[0]?.resources?.limits).toEqual({
      cpu: '4',
      memory: '16Gi',
      'nvidia.com/mig-1g.10gb': '1',
    });
    expect(job.spec!.template.spec?.nodeSelector).toBeUndefined();
  });

  it("puts Jobs where the cluster's placement says (LLMHUB_CLUSTERS nodeSelector, tolerations), beside a GPU Job's own", () => {
    const { real } = clustersOf(
      JSON.stringify({
        real: {
          nodeSelector: { 'llmhub.dev/node-kind': 'real' },
          tolerations: [{ key: 'llmhub.dev/real-node', operator: 'Exists', effect: 'NoSchedule' }],
        },
      }),
    );
    const pod = renderTrainingJob(spec({ gpuProduct: 'NVIDIA-L4' }), 'ns', img, {}, [], real!).spec!.template.spec!;
    expect(pod.nodeSelector).toEqual({ 'llmhub.dev/node-kind': 'real', 'nvidia.com/gpu.product': 'NVIDIA-L4' });
    expect(pod.tolerations).toEqual([
      { key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' },
      { key: 'llmhub.dev/real-node', operator: 'Exists', effect: 'NoSchedule' },
    ]);
    // A CPU conversion step gets the cluster's placement alone; without settings, none at all.
    const step = (placement?: PodPlacement) =>
      renderConversionJob({
        name: 'conv-1-export',
        namespace: 'ns',
        tenantId: 'acme',
        modelId: 'm',
        version: '1',
        workflowId: 'conversion/acme/k',
        memoKey: 'k',
        step: 'export',
        image: 'llmhub/convert:1',
        args: ['export_onnx.py'],
        env: [],
        podAnnotations: {},
        activeDeadlineSeconds: 60,
        ...(placement ? { placement } : {}),
      }).spec!.template.spec!;
    expect(step(real!)).toMatchObject({
      nodeSelector: { 'llmhub.dev/node-kind': 'real' },
      tolerations: [{ key: 'llmhub.dev/real-node', operator: 'Exists', effect: 'NoSchedule' }],
    });
    expect(step()).not.toHaveProperty('nodeSelector');
    expect(step()).not.toHaveProperty('tolerations');
  });
});

describe('llmhub-mlp and hyperparameters', () => {
  const mlp: Mlp = [
    { inputs: 2, outputs: 2, weight: Float32Array.from([1, 0, 0, 1]), bias: Float32Array.from([0, 0]) },
    { inputs: 2, outputs: 1, weight: Float32Array.from([1, 1]), bias: Float32Array.from([0.5]) },
  ];
  it('round-trips through safetensors and computes tanh hidden layers with a linear output', () => {
    const back = decodeMlp(encodeMlp(mlp));
    expect(back.map((l) => [l.inputs, l.outputs])).toEqual([
      [2, 2],
      [2, 1],
    ]);
    expect(forward(back, [0.3, -0.2])[0]).toBeCloseTo(Math.tanh(0.3) + Math.tanh(-0.2) + 0.5, 6);
    expect(meanSquaredError(back, [{ x: [0, 0], y: [0.5] }])).toBe(0);
  });
  it('names the line of a dataset row that does not fit the model', () => {
    expect(() => parseDataset('{"x":[1,2],"y":[1]}\n{"x":[1],"y":[1]}\n', mlp)).toThrow('line 2');
  });
  it('keeps every documented hyperparameter default within the bounds the API enforces', () => {
    for (const [name, b] of Object.entries(HYPERPARAMETER_BOUNDS)) {
      const v = DEFAULT_HYPERPARAMETERS[name as keyof typeof DEFAULT_HYPERPARAMETERS];
      expect({
        name,
        ok:
          v <= b.maximum &&
          (b.minimum === undefined || v >= b.minimum) &&
          (b.exclusiveMinimum === undefined || v > b.exclusiveMinimum) &&
          (!b.integer || Number.isInteger(v)),
      }).toEqual({ name, ok: true });
    }
  });
});
