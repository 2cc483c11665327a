import { describe, expect, it } from '@jest/globals';
import { ApplicationFailure } from '@temporalio/common';
import type { V1PodTemplateSpec } from '@kubernetes/client-node';
import { renderConversionJob, type ConversionJobSpec } from '../../activities/conversion/jobs';
import { tenantNamespace } from '../../activities/kubernetes/client';
import { renderTrainingJob } from '../../activities/kubernetes/jobs';
import { renderModelServer, servingName, type ModelServerSpec } from '../../activities/kubernetes/manifests';
import { forbiddenEnvName, forbiddenPodMetadataKey, podMetadataKeysOf } from '../../common/workload-policy';
import { ClusterFailures } from '../../contracts/cluster';

const serving: ModelServerSpec = {
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
const conversion = (gpu?: ConversionJobSpec['gpu']): ConversionJobSpec => ({
  name: 'conv-1-export',
  namespace: 'llmhub-acme',
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

/** Every pod template the platform renders for a tenant, by workload kind. */
const workloads: [string, V1PodTemplateSpec][] = [
  [
    'serving',
    renderModelServer(serving, { namespace: 'llmhub-acme', name: 'llama-v2' }, { image: 'vllm/vllm-openai:v0.6.3' })
      .deployment.spec!.template,
  ],
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
      'llmhub-acme',
      { image: 'llmhub/trainer:1', env: [] },
      {},
    ).spec!.template,
  ],
  ['conversion', renderConversionJob(conversion()).spec!.template],
  ['tensorrt', renderConversionJob(conversion({ product: 'NVIDIA-L4' })).spec!.template],
];

describe('tenant pods', () => {
  it.each(workloads)('%s pods meet the restricted Pod Security Standard', (_kind, template) => {
    const pod = template.spec!;
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(pod.securityContext!.runAsUser).toBeGreaterThan(0);
    for (const forbidden of ['hostNetwork', 'hostPID', 'hostIPC', 'volumes', 'initContainers'] as const) {
      expect(pod[forbidden]).toBeUndefined();
    }
    for (const c of pod.containers) {
      expect(c.securityContext).toMatchObject({
        allowPrivilegeEscalation: false,
        capabilities: { drop: ['ALL'] },
        runAsNonRoot: true,
      });
      expect(c.securityContext?.privileged).toBeUndefined();
      expect(c.securityContext?.capabilities?.add).toBeUndefined();
      expect(c.ports?.some((p) => p.hostPort !== undefined) ?? false).toBe(false);
    }
  });

  it('tenant namespaces enforce the restricted standard', () => {
    expect(tenantNamespace('llmhub-acme').metadata?.labels).toMatchObject({
      'pod-security.kubernetes.io/enforce': 'restricted',
    });
  });

  it('a model server refuses loader and runtime variables and prefixed pod metadata, as a non-retryable failure', () => {
    const render =
      (s: Partial<ModelServerSpec>, allowed: string[] = []) =>
      () =>
        renderModelServer({ ...serving, ...s }, { namespace: 'ns', name: 'llama-v2' }, { image: 'x' }, allowed);
    for (const env of [
      { LD_PRELOAD: '/tmp/x.so' },
      { NODE_OPTIONS: '--require /tmp/x' },
      { PYTHONPATH: '/tmp' },
    ] as Record<string, string>[]) {
      expect(render({ env })).toThrow(ApplicationFailure);
    }
    const err = (() => {
      try {
        render({ podAnnotations: { 'sidecar.istio.io/inject': 'false' } })();
      } catch (e) {
        return e;
      }
    })();
    expect(err).toMatchObject({ type: ClusterFailures.invalidManifest, nonRetryable: true });
    expect(render({ podAnnotations: { 'example.com/owner': 'x' } }, ['example.com/'])).not.toThrow();
  });
});

describe('workload policy', () => {
  it('names loader, runtime and platform variables, and lets ordinary ones through', () => {
    for (const name of ['LD_PRELOAD', 'ld_library_path', 'DYLD_INSERT_LIBRARIES', 'NODE_OPTIONS', 'PYTHONPATH']) {
      expect(forbiddenEnvName(name)).toBeDefined();
    }
    for (const name of [
      'JAVA_TOOL_OPTIONS',
      'BASH_ENV',
      'NVIDIA_VISIBLE_DEVICES',
      'AWS_SECRET_ACCESS_KEY',
      'LLMHUB_MODEL_URI',
    ]) {
      expect(forbiddenEnvName(name)).toBeDefined();
    }
    for (const name of ['LOG_LEVEL', 'HF_TOKEN', 'MAX_MODEL_LEN', 'ENV', 'CUDA_VISIBLE_DEVICES']) {
      expect(forbiddenEnvName(name)).toBeUndefined();
    }
  });

  it('allows unprefixed keys, and prefixed ones only as the operator lists them', () => {
    const allowed = podMetadataKeysOf(' llmhub.dev/kwok-behaviour , example.com/ ,');
    expect(allowed).toEqual(['llmhub.dev/kwok-behaviour', 'example.com/']);
    expect(forbiddenPodMetadataKey('team', allowed)).toBeUndefined();
    expect(forbiddenPodMetadataKey('llmhub.dev/kwok-behaviour', allowed)).toBeUndefined();
    expect(forbiddenPodMetadataKey('example.com/anything', allowed)).toBeUndefined();
    for (const key of [
      'container.apparmor.security.beta.kubernetes.io/model-server',
      'sidecar.istio.io/inject',
      'linkerd.io/inject',
      'llmhub.dev/tenant',
    ]) {
      expect(forbiddenPodMetadataKey(key, allowed)).toMatch(/LLMHUB_POD_METADATA_KEYS/);
    }
    expect(forbiddenPodMetadataKey('-bad', allowed)).toMatch(/not a valid/);
  });
});

describe('serving names', () => {
  it('are DNS-1035 labels of at most 63 characters, one per (model, version) pair', () => {
    const names = [
      servingName('a', 'b-c'),
      servingName('a-b', 'c'),
      servingName('9lives', 'v1'),
      servingName('m'.repeat(63), 'V'.repeat(63)),
    ];
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) expect(n).toMatch(/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/);
    expect(servingName('a', 'b-c')).toBe(servingName('a', 'b-c'));
  });
});
