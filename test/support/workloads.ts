import type { V1PodTemplateSpec } from '@kubernetes/client-node';
import { renderConversionJob, type ConversionJobSpec } from '../../activities/conversion/jobs';
import { renderTrainingJob } from '../../activities/kubernetes/jobs';
import { renderModelServer, type ModelServerSpec } from '../../activities/kubernetes/manifests';

/** A model server spec with tenant env (a plain value and a Secret reference) and tenant pod metadata. */
export const servingSpec: ModelServerSpec = {
  cluster: 'local',
  tenantId: 'acme',
  modelId: 'llama',
  version: 'v2',
  workflowId: 'rollout/acme/k1',
  artifactUri: 's3://acme/llama/v2',
  resources: { cpu: '2', gpu: 1, memory: '16Gi' },
  env: { LOG_LEVEL: 'info', HF_TOKEN: { secretRef: { name: 'hf', key: 'token' } } },
  podAnnotations: { team: 'search' },
  podLabels: { 'cost-center': 'c42' },
};

const conversion = (namespace: string, gpu?: ConversionJobSpec['gpu']): ConversionJobSpec => ({
  name: 'conv-1-export',
  namespace,
  tenantId: 'acme',
  modelId: 'llama',
  version: 'v2',
  workflowId: 'conversion/acme/k1',
  memoKey: 'abc',
  step: gpu ? 'tensorrt' : 'export',
  image: 'llmhub/convert:1',
  args: ['export_onnx.py'],
  env: [],
  podAnnotations: {},
  ...(gpu ? { gpu } : {}),
  activeDeadlineSeconds: 600,
});

/** Every pod template the platform renders for a tenant, by workload kind, as the activities render them. */
export const tenantWorkloads = (namespace: string, image = 'llmhub/any:1'): [string, V1PodTemplateSpec][] => [
  ['serving', renderModelServer(servingSpec, { namespace, name: 'llama-v2' }, { image }).deployment.spec!.template],
  [
    'trainer',
    renderTrainingJob(
      {
        cluster: 'local',
        tenantId: 'acme',
        modelId: 'llama',
        version: 'v2-ft',
        workflowId: 'fine-tune/acme/k1',
        fineTuneId: 'k1',
        attempt: 1,
        resources: { gpuCount: 1, cpu: '4', memory: '16Gi' },
        env: {},
        deadlineSeconds: 3600,
      },
      namespace,
      { image, env: [] },
      {},
    ).spec!.template,
  ],
  ['conversion', renderConversionJob({ ...conversion(namespace), image }).spec!.template],
  ['tensorrt', renderConversionJob({ ...conversion(namespace, { product: 'NVIDIA-L4' }), image }).spec!.template],
];
