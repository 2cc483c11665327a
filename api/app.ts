import {
  DEFAULT_TENANT_BUCKET_PREFIX,
  tenantDefaultLimitOf,
  type ClusterSettings,
  type LimitCeiling,
} from '../common/config';
import { DEFAULT_GPU_QUOTA } from '../contracts/fine-tune';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { Client } from '@temporalio/client';
import { startWakeRelay } from './autoscaling';
import type { FastifyInstance } from 'fastify';
import type { Pool } from 'pg';
import { EgressPolicy } from '../common/egress';
import type { ObjectStore } from '../common/objectstore';
import type { StorageAdmin } from '../common/storage-admin';
import { StorageScopeStore } from '../common/store/storage-scope';
import type { AuditStore } from '../common/store/audit';
import { RegistryStore } from '../common/store/registry';
import { KnowledgeStore } from '../common/store/knowledge';
import type { TenantStore } from '../common/store/tenants';
import type { EmbedderRegistry } from '../common/knowledge';
import type { VectorStore } from '../common/vectors';
import { createHttpApp, registerGateway, REQUEST_TIMEOUT_MS, type HttpAppDeps, type ProviderDeps } from './http-app';
import { startUploadSweeper } from './upload-sweeper';
import { batchRoutes } from './routes/batches';
import { conversionRoutes } from './routes/conversions';
import { fileRoutes } from './routes/files';
import { agentRunRoutes } from './routes/agent-runs';
import { agentRoutes } from './routes/agents';
import { deploymentRoutes } from './routes/deployments';
import { fineTuneRoutes } from './routes/fine-tunes';
import { pipelineRoutes } from './routes/pipelines';
import { adminRoutes } from './routes/admin';
import { auditRoutes, platformAuditRoutes } from './routes/audit';
import { healthRoutes } from './routes/health';
import { knowledgeRoutes } from './routes/knowledge';
import { knowledgeChatRoutes } from './routes/knowledge-chat';
import { mcpCatalogRoutes } from './routes/mcp-catalog';
import { mcpServerRoutes } from './routes/mcp-servers';
import { modelListRoutes } from './routes/model-list';
import { modelRoutes } from './routes/models';
import { platformRoutes } from './routes/platform';
import { platformUsageRoutes, usageRoutes } from './routes/usage';
import { providerCredentialRoutes, providerRouteRoutes, providerRoutes } from './routes/providers';
import type { TenantResources } from '../common/tenant-resources';
import { refuseUnstorableText } from './plugins/storable-text';

export interface AppDeps extends HttpAppDeps {
  temporal: Client;
  objects: ObjectStore;
  taskQueue: string;
  vectors: VectorStore;
  embedders: EmbedderRegistry;
  /** UNSTRUCTURED_API_URL is set, so an ingestion may ask for `parser: "unstructured"`; default false. */
  unstructuredParser?: boolean;
  platformBucket: string;
  /** LLMHUB_TENANT_BUCKET_PREFIX; default `llmhub-t-`. */
  tenantBucketPrefix?: string;
  /** The object store's identity management (LLMHUB_STORAGE_ADMIN); none: tenants get buckets but no S3 users. */
  storageAdmin?: StorageAdmin;
  /** The clusters deployments, fine-tunes and conversions may name (LLMHUB_CLUSTERS). */
  clusters: ClusterSettings;
  /** Prefixed pod label/annotation keys tenants may set (LLMHUB_POD_METADATA_KEYS); default none. */
  podMetadataKeys?: readonly string[];
  /** What a tenant created by an operator gets unless the call says otherwise (LLMHUB_TENANT_DEFAULT_*). */
  tenantDefaults?: { gpus: number; ceiling: LimitCeiling };
  /** Created with each tenant and removed with it (storage scope, namespaces). */
  tenantResources?: TenantResources[];
  /** Where HTTP MCP servers may be reached at registration (LLMHUB_MCP_EGRESS_ALLOW); default: no internal address. */
  mcpEgress?: EgressPolicy;
  /** How long a batch runs before it expires with its partial output; default 24 h (OpenAI's only window, `24h`). */
  batchCompletionWindowMs?: number;
}

export interface Platform {
  db: Pool;
  temporal: Client;
  objects: ObjectStore;
  taskQueue: string;
  registry: RegistryStore;
  tenants: TenantStore;
  audit: AuditStore;
  knowledge: KnowledgeStore;
  vectors: VectorStore;
  embedders: EmbedderRegistry;
  unstructuredParser: boolean;
  platformBucket: string;
  storageScopes: StorageScopeStore;
  storageAdmin?: StorageAdmin;
  clusters: ClusterSettings;
  podMetadataKeys: readonly string[];
  tenantResources: TenantResources[];
  mcpEgress: EgressPolicy;
  /** Where budget alert webhooks may be reached (LLMHUB_WEBHOOK_EGRESS_ALLOW), checked when one is set. */
  webhookEgress: EgressPolicy;
  /** Unset without LLMHUB_KEK_FILE: provider registration answers 503. */
  providers?: ProviderDeps;
  /** Read at each batch's creation, so a test can shorten it for one batch and see it expire. */
  batchCompletionWindowMs: number;
  /** A batch input line's most bytes: each line goes through the gateway, whose body limit it must fit. */
  batchLineLimitBytes: number;
}

declare module 'fastify' {
  interface FastifyInstance {
    platform: Platform;
  }
}

/** Builds the api role's app (control routes, and the inference gateway) without listening; tests use `inject`. */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const http = await createHttpApp(deps, async (app) => {
    await app.register(swagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'LLMHub API',
          version: '1.0.0',
          description: 'Control API of the LLMHub platform; every operation is a Temporal workflow.',
        },
        components: {
          securitySchemes: {
            bearer: { type: 'http', scheme: 'bearer', description: 'LLMHub API key (llmhub_...) or a JWT' },
          },
        },
        security: [{ bearer: [] }],
      },
      refResolver: { buildLocalReference: (json, _base, _fragment, i) => String(json.$id ?? `def-${i}`) },
    });
    // The plugin's own Content-Security-Policy for its pages (with the hashes of its inline script and style), which
    // also keeps them out of other sites' frames.
    await app.register(swaggerUi, { routePrefix: '/docs', uiConfig: { deepLinking: true }, staticCSP: true });
    app.get('/openapi.json', { config: { public: true }, schema: { hide: true } }, async () => app.swagger());
  });
  const { app } = http;
  const platform: Platform = {
    db: deps.db,
    temporal: deps.temporal,
    objects: deps.objects,
    taskQueue: deps.taskQueue,
    registry: new RegistryStore(deps.db),
    tenants: http.tenants,
    audit: http.audit,
    knowledge: new KnowledgeStore(deps.db),
    vectors: deps.vectors,
    embedders: deps.embedders,
    unstructuredParser: deps.unstructuredParser ?? false,
    platformBucket: deps.platformBucket,
    storageScopes: new StorageScopeStore(deps.db, deps.tenantBucketPrefix ?? DEFAULT_TENANT_BUCKET_PREFIX),
    ...(deps.storageAdmin ? { storageAdmin: deps.storageAdmin } : {}),
    clusters: deps.clusters,
    podMetadataKeys: deps.podMetadataKeys ?? [],
    tenantResources: deps.tenantResources ?? [],
    mcpEgress: deps.mcpEgress ?? new EgressPolicy(),
    webhookEgress: deps.webhookEgress ?? new EgressPolicy([], undefined, { setting: 'LLMHUB_WEBHOOK_EGRESS_ALLOW' }),
    ...(deps.providers ? { providers: deps.providers } : {}),
    batchCompletionWindowMs: deps.batchCompletionWindowMs ?? 24 * 3_600_000,
    batchLineLimitBytes: http.gateway.bodyLimitBytes,
  };
  app.decorate('platform', platform);
  const wakes = startWakeRelay({
    db: deps.db,
    temporal: deps.temporal,
    taskQueue: deps.taskQueue,
    logger: deps.logger,
  });
  app.addHook('onClose', () => wakes.close());
  const uploads = startUploadSweeper({
    tenants: platform.tenants,
    scopes: platform.storageScopes,
    objects: deps.objects,
    requestTimeoutMs: deps.requestTimeoutMs ?? REQUEST_TIMEOUT_MS,
    logger: deps.logger,
  });
  app.addHook('onClose', () => uploads.close());
  await app.register(healthRoutes, {
    checks: {
      database: () => deps.db.query('SELECT 1'),
      temporal: () => deps.temporal.workflowService.getSystemInfo({}),
    },
  });
  await registerGateway(http, deps);
  // The control routes write what they are sent to the platform store; inference bodies only pass through.
  await app.register(async (control) => {
    refuseUnstorableText(control);
    await control.register(modelListRoutes, { prefix: '/v1/models', registry: platform.registry });
    await control.register(modelRoutes, { prefix: '/v1/models' });
    await control.register(knowledgeRoutes, { prefix: '/v1/knowledge' });
    await control.register(knowledgeChatRoutes, { prefix: '/v1/knowledge' });
    await control.register(deploymentRoutes, { prefix: '/v1' });
    await control.register(mcpServerRoutes, { prefix: '/v1/mcp-servers' });
    await control.register(agentRoutes, { prefix: '/v1/agents' });
    await control.register(agentRunRoutes, { prefix: '/v1/agent-runs' });
    await control.register(conversionRoutes, { prefix: '/v1' });
    await control.register(fineTuneRoutes, { prefix: '/v1' });
    await control.register(pipelineRoutes, { prefix: '/v1' });
    await control.register(adminRoutes, { prefix: '/v1' });
    await control.register(usageRoutes, { prefix: '/v1' });
    await control.register(platformUsageRoutes, { prefix: '/v1/platform' });
    await control.register(fileRoutes, { prefix: '/v1/files' });
    await control.register(batchRoutes, { prefix: '/v1/batches' });
    await control.register(mcpCatalogRoutes, { prefix: '/v1/platform/mcp-catalog' });
    await control.register(providerRoutes, { prefix: '/v1/providers', owner: 'tenant' });
    await control.register(providerRoutes, { prefix: '/v1/platform/providers', owner: 'platform' });
    await control.register(providerCredentialRoutes, { prefix: '/v1/platform/provider-credentials' });
    await control.register(providerRouteRoutes, { prefix: '/v1/provider-routes' });
    await control.register(auditRoutes, { prefix: '/v1/audit' });
    await control.register(platformAuditRoutes, { prefix: '/v1/platform/audit' });
    await control.register(platformRoutes, {
      prefix: '/v1/platform',
      defaults: deps.tenantDefaults ?? { gpus: DEFAULT_GPU_QUOTA, ceiling: tenantDefaultLimitOf(undefined) },
    });
  });
  return app;
}
