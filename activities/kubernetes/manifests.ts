import { createHash } from 'node:crypto';
import type { V1Deployment, V1EnvVar, V1Service, V1Toleration } from '@kubernetes/client-node';
import { ApplicationFailure } from '@temporalio/common';
import { forbiddenEnvName, forbiddenPodMetadataKey } from '../../common/workload-policy';
import { ClusterFailures } from '../../contracts/cluster';
import type { EnvValue, ServingResources } from '../../contracts/rollout';
import { restrictedContainer, restrictedPod } from './pod-security';

export const FIELD_MANAGER = 'llmhub';
export const SERVING_PORT = 8000;
export const Labels = {
  tenant: 'llmhub.dev/tenant',
  model: 'llmhub.dev/model',
  version: 'llmhub.dev/version',
  workflowId: 'llmhub.dev/workflow-id',
} as const;

/** What a model version's server needs; references only (artifact URI, secret refs). */
export interface ModelServerSpec {
  cluster: string;
  tenantId: string;
  modelId: string;
  version: string;
  workflowId: string;
  artifactUri: string;
  resources: ServingResources;
  env: Record<string, EnvValue>;
  podAnnotations: Record<string, string>;
  podLabels: Record<string, string>;
}

export interface ModelServerImage {
  image: string;
  /** GPU product for the `nvidia.com/gpu.product` node selector; none: any GPU node. */
  gpuProduct?: string;
  /** Where the server finds the object store (s3SettingsEnv); its keys are the tenant's own, added per version. */
  s3Env?: V1EnvVar[];
}

/** Where a cluster's pods go (LLMHUB_CLUSTERS nodeSelector/tolerations), merged into every pod the platform runs there. */
export interface PodPlacement {
  nodeSelector?: Record<string, string>;
  tolerations?: V1Toleration[];
}

/** Lower-case letters, digits and inner dashes: what a DNS label may hold, before length and first-letter rules. */
const labelChars = (s: string): string =>
  s
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '');

export const dnsLabel = (s: string, max = 63): string => {
  const clean = labelChars(s);
  // A changed or shortened name gets a hash of the original, so two versions never collide on one name.
  if (clean === s && clean.length <= max && /^[a-z]/.test(clean)) return clean;
  const hash = createHash('sha256').update(s).digest('hex').slice(0, 8);
  return `m-${clean.slice(0, max - 11).replace(/-+$/, '')}-${hash}`;
};

/** Label values allow [A-Za-z0-9._-], 63 characters; the exact value goes into an annotation of the same key. */
export const labelValue = (s: string): string =>
  s
    .replace(/[^A-Za-z0-9._-]/g, '_')
    .slice(0, 63)
    .replace(/[^A-Za-z0-9]+$/, '');

/**
 * Deployment and Service name of a model version (a DNS-1035 label, as Services need). The hash of the exact pair
 * keeps it unique: without it model `a` version `b-c` and model `a-b` version `c` shared one name, and a rollback
 * of one deleted the other. Versions applied under the older name are found by their labels (`existingName`).
 */
export const servingName = (modelId: string, version: string): string => {
  const hash = createHash('sha256').update(`${modelId}\0${version}`).digest('hex').slice(0, 8);
  const clean = labelChars(`${modelId}-${version}`);
  const head = (/^[a-z]/.test(clean) ? clean : `m-${clean}`).slice(0, 63 - 9).replace(/-+$/, '');
  return `${head}-${hash}`;
};

/** The labels that find a model version's serving objects, whatever they are named. */
export const servingSelector = (tenantId: string, modelId: string, version: string): Record<string, string> => ({
  [Labels.tenant]: labelValue(tenantId),
  [Labels.model]: labelValue(modelId),
  [Labels.version]: labelValue(version),
});

/** Tenant ids become namespace names `llmhub-<tenant>` unless configuration maps them. */
export const defaultNamespaceOf = (tenantId: string): string => dnsLabel(`llmhub-${tenantId}`);

function envVars(env: Record<string, EnvValue>, spec: ModelServerSpec): V1EnvVar[] {
  for (const name of Object.keys(env)) {
    const why = forbiddenEnvName(name);
    if (why) throw ApplicationFailure.nonRetryable(`env ${why}`, ClusterFailures.invalidManifest);
  }
  const fromRequest = Object.entries(env).map(([name, v]): V1EnvVar =>
    typeof v === 'string'
      ? { name, value: v }
      : { name, valueFrom: { secretKeyRef: { name: v.secretRef.name, key: v.secretRef.key } } },
  );
  return [{ name: 'LLMHUB_MODEL_URI', value: spec.artifactUri }, ...fromRequest];
}

/** The pod spec's tolerations and node selector: the workload's own and the cluster's placement; none when empty. */
export function placed(
  tolerations: V1Toleration[],
  nodeSelector: Record<string, string>,
  placement: PodPlacement,
): { tolerations?: V1Toleration[]; nodeSelector?: Record<string, string> } {
  const t = [...tolerations, ...(placement.tolerations ?? [])];
  const n = { ...nodeSelector, ...placement.nodeSelector };
  return { ...(t.length ? { tolerations: t } : {}), ...(Object.keys(n).length ? { nodeSelector: n } : {}) };
}

export function renderModelServer(
  spec: ModelServerSpec,
  at: { namespace: string; name: string },
  img: ModelServerImage,
  allowedMetadataKeys: readonly string[] = [],
  s3Keys: V1EnvVar[] = [],
  placement: PodPlacement = {},
): { deployment: V1Deployment; service: V1Service } {
  const { namespace, name } = at;
  for (const key of [...Object.keys(spec.podLabels), ...Object.keys(spec.podAnnotations)]) {
    const why = forbiddenPodMetadataKey(key, allowedMetadataKeys);
    if (why) throw ApplicationFailure.nonRetryable(`canary metadata ${why}`, ClusterFailures.invalidManifest);
  }
  const selector = servingSelector(spec.tenantId, spec.modelId, spec.version);
  const labels = {
    ...selector,
    [Labels.workflowId]: labelValue(spec.workflowId),
    'app.kubernetes.io/managed-by': FIELD_MANAGER,
  };
  const annotations = { [Labels.workflowId]: spec.workflowId, [Labels.version]: spec.version };
  const gpu = spec.resources.gpu;
  const limits: Record<string, string> = {
    cpu: spec.resources.cpu,
    memory: spec.resources.memory,
    ...(gpu > 0 ? { 'nvidia.com/gpu': String(gpu) } : {}),
  };
  const deployment: V1Deployment = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, namespace, labels, annotations },
    spec: {
      replicas: 1,
      selector: { matchLabels: selector },
      template: {
        metadata: { labels: { ...spec.podLabels, ...labels }, annotations: { ...spec.podAnnotations, ...annotations } },
        spec: {
          ...restrictedPod,
          containers: [
            {
              name: 'model-server',
              securityContext: restrictedContainer,
              image: img.image,
              args: ['--served-model-name', spec.modelId, '--port', String(SERVING_PORT)],
              ports: [{ name: 'http', containerPort: SERVING_PORT }],
              env: [...envVars(spec.env, spec), ...(img.s3Env ?? []), ...s3Keys],
              resources: { requests: { cpu: spec.resources.cpu, memory: spec.resources.memory }, limits },
              // The OpenAI server answers /v1/models only once the weights are loaded; /health as soon as it runs.
              readinessProbe: { httpGet: { path: '/v1/models', port: 'http' }, periodSeconds: 5, failureThreshold: 3 },
              livenessProbe: {
                httpGet: { path: '/health', port: 'http' },
                initialDelaySeconds: 30,
                periodSeconds: 10,
                failureThreshold: 6,
              },
            },
          ],
          ...placed(
            gpu > 0 ? [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }] : [],
            gpu > 0 && img.gpuProduct ? { 'nvidia.com/gpu.product': img.gpuProduct } : {},
            placement,
          ),
        },
      },
    },
  };
  const service: V1Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace, labels, annotations },
    spec: { selector, ports: [{ name: 'http', port: SERVING_PORT, targetPort: 'http' }] },
  };
  return { deployment, service };
}
