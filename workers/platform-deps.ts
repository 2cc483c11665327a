import { KubeConfig } from '@kubernetes/client-node';
import { Type } from '@sinclair/typebox';
import type { Pool } from 'pg';
import type { PlatformActivityDeps } from '../activities';
import { clusterIpEndpoints, localEndpoints, serviceDnsEndpoints } from '../activities/kubernetes/endpoints';
import { defaultNamespaceOf } from '../activities/kubernetes/manifests';
import { tenantNamespacePolicyOf } from '../activities/kubernetes/tenant-namespace';
import { createUnstructuredParser } from '../activities/parsing/unstructured';
import { createAlertSink } from '../activities/rollout/alerts';
import { observeIngestStage } from '../activities/knowledge/metrics';
import { s3SettingsEnv } from '../activities/kubernetes/tenant-s3';
import { clustersOf, ConfigError, jsonEnv, type Config } from '../common/config';
import { EmbedderRegistry, vectorStoreFromConfig } from '../common/knowledge';
import { createLogger } from '../common/logger';
import { s3StoreFromConfig } from '../common/objectstore';
import { storageAdminFromConfig } from '../common/storage-admin/from-config';
import { tenantStorage } from '../common/tenant-storage';
import { StorageScopeStore } from '../common/store/storage-scope';
import { GatewayMetricsStore } from '../common/store/gateway-metrics';
import { KnowledgeStore } from '../common/store/knowledge';
import { RegistryStore } from '../common/store/registry';
import { RoutingStore } from '../common/store/routing';
import { AgentStore } from '../common/store/agents';
import { McpCatalogStore } from '../common/store/mcp-catalog';
import { EgressPolicy } from '../common/egress';
import { AuditStore } from '../common/store/audit';
import { TenantStore } from '../common/store/tenants';
import { ConversionStore } from '../common/store/conversions';
import { GpuQuotaStore } from '../common/store/gpu-quota';
import { podMetadataKeysOf } from '../common/workload-policy';

const StringMap = Type.Record(Type.String(), Type.String());

/** The real clients behind the platform activities, from configuration; tests override single parts. */
export async function platformActivityDeps(
  config: Config,
  db: Pool,
  overrides: Partial<PlatformActivityDeps> = {},
): Promise<PlatformActivityDeps> {
  const clusters = clustersOf(config.LLMHUB_CLUSTERS);
  const namespaces = jsonEnv('LLMHUB_TENANT_NAMESPACES', config.LLMHUB_TENANT_NAMESPACES, StringMap);
  const processClusters = Object.keys(clusters).filter((name) => clusters[name]!.runtime === 'process');
  // Local processes are a dev runtime that only the dev stack's worker hands in (deploy/dev/worker.ts); without it such a
  // cluster would be taken for a Kubernetes one, so refuse to start instead.
  if (processClusters.length && !overrides.modelRuntimeOf) {
    throw new ConfigError(
      `invalid configuration:\n  LLMHUB_CLUSTERS: ${processClusters.join(', ')}: runtime "process" is served by the dev stack's worker only`,
    );
  }
  const local = config.LLMHUB_LOCAL_ENDPOINTS
    ? jsonEnv('LLMHUB_LOCAL_ENDPOINTS', config.LLMHUB_LOCAL_ENDPOINTS, StringMap)
    : undefined;
  const localResolver = local ? localEndpoints(new Map(Object.entries(local))) : undefined;
  const quotas = new GpuQuotaStore(db);
  const storageAdmin = storageAdminFromConfig(config);
  const storageScopes = new StorageScopeStore(db, config.LLMHUB_TENANT_BUCKET_PREFIX);
  const objects = s3StoreFromConfig(config);
  return {
    db,
    registry: new RegistryStore(db),
    storageScopes,
    tenantS3Credentials: (tenantId) => storageAdmin?.credentialsOf(tenantId),
    objects,
    knowledge: new KnowledgeStore(db),
    vectors: await vectorStoreFromConfig(config),
    embedders: new EmbedderRegistry(config),
    observeStage: observeIngestStage,
    platformBucket: config.PLATFORM_BUCKET,
    ...(config.UNSTRUCTURED_API_URL
      ? { unstructured: createUnstructuredParser(config.UNSTRUCTURED_API_URL, config.UNSTRUCTURED_API_KEY) }
      : {}),
    routing: new RoutingStore(db),
    gatewayMetrics: new GatewayMetricsStore(db),
    alerts: createAlertSink(createLogger('llmhub-rollout', config.LOG_LEVEL), config.ROLLOUT_ALERT_WEBHOOK),
    kubeConfigOf: (cluster) => {
      const c = clusters[cluster];
      if (!c) return undefined;
      const kc = new KubeConfig();
      const file = c.kubeconfig ?? config.KUBECONFIG;
      if (file) kc.loadFromFile(file);
      else kc.loadFromDefault();
      return kc;
    },
    modelRuntimeOf: () => undefined,
    namespaceOf: (tenantId) => namespaces[tenantId] ?? defaultNamespaceOf(tenantId),
    gpuQuotaOf: (tenantId) => quotas.quotaOf(tenantId),
    tenantNamespacePolicy: tenantNamespacePolicyOf(config),
    podMetadataKeys: podMetadataKeysOf(config.LLMHUB_POD_METADATA_KEYS),
    modelServer: {
      image: config.LLMHUB_MODEL_SERVER_IMAGE,
      s3Env: s3SettingsEnv(config),
      ...(config.LLMHUB_GPU_PRODUCT ? { gpuProduct: config.LLMHUB_GPU_PRODUCT } : {}),
    },
    endpointOf: (v) =>
      clusters[v.cluster]?.serviceAddress === 'clusterIP'
        ? clusterIpEndpoints(v)
        : (localResolver ?? serviceDnsEndpoints)(v),
    podPlacementOf: (cluster) => ({
      nodeSelector: clusters[cluster]?.nodeSelector,
      tolerations: clusters[cluster]?.tolerations,
    }),
    conversions: new ConversionStore(db),
    conversionJobs: {
      image: config.LLMHUB_CONVERT_IMAGE,
      tensorrtImage: config.LLMHUB_CONVERT_TENSORRT_IMAGE,
      s3Env: s3SettingsEnv(config),
      ...(config.LLMHUB_GPU_PRODUCT ? { gpuProduct: config.LLMHUB_GPU_PRODUCT } : {}),
    },
    agents: new AgentStore(db),
    catalog: new McpCatalogStore(db),
    egress: EgressPolicy.fromEnv(config.LLMHUB_MCP_EGRESS_ALLOW),
    audit: new AuditStore(db),
    tenants: new TenantStore(db),
    gatewayUrl: config.LLMHUB_GATEWAY_URL ?? `http://${config.API_HOST}:${config.API_PORT}`,
    trainer: { image: config.LLMHUB_TRAINER_IMAGE, env: s3SettingsEnv(config) },
    jobPodAnnotationsOf: (cluster) => clusters[cluster]?.jobPodAnnotations ?? {},
    // A deleted tenant's bucket and S3 user go in its deletion run (workflows/tenant-deletion.ts).
    tenantResources: [tenantStorage(storageScopes, objects, storageAdmin)],
    ...overrides,
  };
}
