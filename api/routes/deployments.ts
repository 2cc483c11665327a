import { Type, type Static, type TSchema } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { BadRequestError, ConflictError, ForbiddenError, NotFoundError } from '../../common/errors';
import { anyCase, FORBIDDEN_ENV_PATTERN, podMetadataKeyPattern } from '../../common/workload-policy';
import {
  DEFAULT_ANALYSIS,
  defaultSteps,
  DURATION_PATTERN,
  rolloutContract,
  rolloutSteering,
  type EnvValue,
  type RolloutInput,
  type ServingResources,
} from '../../contracts/rollout';
import { resolveResources, Resources } from '../../common/resources';
import { ModelIdKey } from '../../contracts/search-attributes';
import { RolloutLockStore } from '../../common/store/rollouts';
import { providerTarget, ProviderStore } from '../../common/store/providers';
import { RoutingStore } from '../../common/store/routing';
import { MissingReferenceError } from '../resource-schemas';
import { ProviderRef } from './providers';
import { hasRole, requireRole } from '../plugins/auth';
import { canonicalHash } from '../../common/canonical';
import { executeRunUpdate, IdParams, operationRoutes, type Links } from '../operation-routes';
import { ClusterName, RolloutRead, RolloutStatusSchema } from '../operation-schemas';
import { linkTo } from '../openapi-links';
import { operationRun } from '../operations';
import { errorResponses, ResourceId, VersionId } from '../schemas';
import { AutoscalingBody, autoscalingOf } from '../autoscaling';

const Duration = Type.String({ pattern: DURATION_PATTERN, description: 'e.g. 30s, 5m, 1h' });
const Step = Type.Union([
  Type.Object({ setWeight: Type.Integer({ minimum: 0, maximum: 100 }) }, { additionalProperties: false }),
  Type.Object(
    { pause: Type.Object({ duration: Type.Optional(Duration) }, { additionalProperties: false }) },
    { additionalProperties: false },
  ),
  Type.Object({ analysis: Type.Object({}, { additionalProperties: false }) }, { additionalProperties: false }),
  Type.Object({ approval: Type.Object({}, { additionalProperties: false }) }, { additionalProperties: false }),
]);
const SecretRef = Type.Object(
  {
    secretRef: Type.Object(
      { name: ResourceId, key: Type.String({ pattern: '^[-._a-zA-Z0-9]{1,253}$' }) },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);
const ENV_NAME_PATTERN = '^[A-Za-z_][A-Za-z0-9_]{0,127}$';
// A secret value typed into a request would land in the workflow history; such names must use {secretRef}.
const SECRET_NAME_PATTERN = `^(?:[A-Za-z_][A-Za-z0-9_]*)?(?:${['KEY', 'TOKEN', 'SECRET', 'PASSWORD', 'CREDENTIAL'].map(anyCase).join('|')})[A-Za-z0-9_]*$`;
/**
 * Plain values or secret references by name. The rules on names are pattern properties, so a refused name is the field
 * the error names (`body.env.LD_PRELOAD`): names the runtime or the platform own (common/workload-policy.ts) match Never.
 */
const Env = Type.Unsafe<Record<string, EnvValue>>({
  type: 'object',
  patternProperties: {
    [ENV_NAME_PATTERN]: Type.Union([Type.String({ maxLength: 4096 }), SecretRef]),
    [SECRET_NAME_PATTERN]: SecretRef,
    [FORBIDDEN_ENV_PATTERN]: Type.Never(),
  },
  propertyNames: { pattern: ENV_NAME_PATTERN },
  default: {},
  description:
    'plain values or {"secretRef":{"name","key"}}; a name with KEY, TOKEN, SECRET, PASSWORD or CREDENTIAL takes only a secretRef; loader, runtime and platform names (PATH, LD_*, LLMHUB_*, ...) are refused',
});
/** Canary pod labels or annotations: unprefixed keys, or the prefixed ones an operator allows (LLMHUB_POD_METADATA_KEYS). */
const podMetadata = <T extends TSchema>(allowed: readonly string[], value: T) =>
  Type.Unsafe<Record<string, Static<T>>>({
    type: 'object',
    patternProperties: { [podMetadataKeyPattern(allowed)]: value },
    propertyNames: { pattern: podMetadataKeyPattern(allowed) },
    additionalProperties: false,
    maxProperties: 32,
  });

/**
 * The deploy body. What the route checks beyond it needs the store (the model, its versions, the rollout lock), so a
 * schema-valid body is never a 400.
 */
export const deployBody = (clusters: string[], podMetadataKeys: readonly string[]) =>
  Type.Object(
    {
      modelId: ResourceId,
      cluster: ClusterName(clusters, 'a configured cluster (LLMHUB_CLUSTERS)'),
      resources: Type.Optional({
        ...Resources,
        description:
          "default: the model's resources, else the cluster's defaultResources (LLMHUB_CLUSTERS), else 1 cpu, 0 gpu, 4Gi",
      }),
      env: Env,
      version: Type.Optional(VersionId),
      autoscaling: Type.Optional({
        ...AutoscalingBody,
        description:
          'load-driven replicas after promotion, owned by the version autoscaler; absent: one replica (brought back on demand when nothing runs)',
      }),
      strategy: Type.Optional(
        Type.Object(
          {
            steps: Type.Optional(Type.Array(Step, { minItems: 1, maxItems: 100 })),
            /** How long each weight of the default steps is held before its analysis. */
            hold: Type.Optional(Duration),
            analysis: Type.Optional(
              Type.Object(
                {
                  interval: Type.Optional(Duration),
                  minSuccessRate: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
                  maxP95LatencyMs: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
                  minRequests: Type.Optional(Type.Integer({ minimum: 1 })),
                  failureLimit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
                  inconclusiveLimit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
                },
                { additionalProperties: false },
              ),
            ),
            readinessTimeout: Type.Optional(Duration),
            canaryMetadata: Type.Optional(
              Type.Object(
                {
                  annotations: Type.Optional(podMetadata(podMetadataKeys, Type.String({ maxLength: 4096 }))),
                  labels: Type.Optional(
                    podMetadata(
                      podMetadataKeys,
                      Type.String({ pattern: '^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$' }),
                    ),
                  ),
                },
                { additionalProperties: false },
              ),
            ),
          },
          { additionalProperties: false },
        ),
      ),
    },
    { additionalProperties: false },
  );
export type DeployBody = Static<ReturnType<typeof deployBody>>;
const Steering = Type.Object(
  { reason: Type.Optional(Type.String({ maxLength: 1000 })) },
  { additionalProperties: false },
);

/** The rollout workflow's input: every strategy default filled in, the resources already resolved. */
export function rolloutInputOf(
  tenantId: string,
  key: string,
  version: string,
  body: Omit<DeployBody, 'modelId' | 'version' | 'resources'> & { modelId: string },
  resources: ServingResources,
): RolloutInput {
  const s = body.strategy ?? {};
  return {
    tenantId,
    modelId: body.modelId,
    version,
    deploymentId: key,
    cluster: body.cluster,
    resources,
    env: body.env as Record<string, EnvValue>,
    strategy: {
      steps: s.steps ?? defaultSteps(s.hold ?? '1m'),
      analysis: { ...DEFAULT_ANALYSIS, ...s.analysis },
      readinessTimeout: s.readinessTimeout ?? '15m',
      canaryMetadata: { annotations: s.canaryMetadata?.annotations ?? {}, labels: s.canaryMetadata?.labels ?? {} },
    },
    specHash: canonicalHash(s).slice(0, 12),
    ...(body.autoscaling ? { autoscaling: autoscalingOf(body.autoscaling, 'body.autoscaling') } : {}),
  };
}

const byDeploymentId = { parameters: { id: '$response.body#/deploymentId' } };
/** From a started rollout to its status and its steering calls. */
const deploymentLinks: Links = {
  status: linkTo('GET /v1/deployments/{id}', byDeploymentId),
  ...Object.fromEntries(
    Object.keys(rolloutSteering).map((action) => [
      action,
      linkTo(`POST /v1/deployments/{id}/${action}`, byDeploymentId),
    ]),
  ),
};

/**
 * POST /v1/deploy's body: a version to deploy on a cluster, or (`provider`) a provider model as the canary, analysed
 * and promoted or rolled back by the same steps; such a canary deploys nothing, so it takes no cluster.
 */
const deployOrProviderBody = (clusters: string[], podMetadataKeys: readonly string[]) => {
  const base = deployBody(clusters, podMetadataKeys);
  return Type.Object(
    {
      ...base.properties,
      cluster: Type.Optional({
        ...base.properties.cluster,
        description: 'a configured cluster (LLMHUB_CLUSTERS); required unless provider is given',
      }),
      provider: Type.Optional({
        ...ProviderRef,
        description:
          "a provider canary: the model's provider route sends the steps' weights to this provider (its mapping of the model), analysed from the gateway's metrics of provider:<ref>; promoted, it becomes the provider route's stable",
      }),
    },
    { additionalProperties: false },
  );
};
/** What only a deployed version has; a provider canary refuses each, naming it. */
const DEPLOYED_ONLY = ['version', 'resources', 'autoscaling'] as const;

export const deploymentRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { registry, db, temporal } = app.platform;
  const clusterSettings = app.platform.clusters;
  const locks = new RolloutLockStore(db);
  const providers = new ProviderStore(db);
  const routing = new RoutingStore(db);

  /** A provider canary's rollout input: the provider maps the model, and the model has a stable to compare it with. */
  const providerCanaryInput = async (
    tenantId: string,
    key: string,
    body: Static<ReturnType<typeof deployOrProviderBody>> & { provider: string },
  ): Promise<RolloutInput> => {
    for (const field of DEPLOYED_ONLY)
      if (body[field] !== undefined)
        throw new BadRequestError(`a provider canary deploys nothing: ${field} does not apply`, `body.${field}`);
    if (Object.keys(body.env).length)
      throw new BadRequestError('a provider canary deploys nothing: env does not apply', 'body.env');
    for (const field of ['readinessTimeout', 'canaryMetadata'] as const)
      if (body.strategy?.[field] !== undefined)
        throw new BadRequestError(
          `a provider canary deploys nothing: ${field} does not apply`,
          `body.strategy.${field}`,
        );
    const found = await providers.resolve(tenantId, body.provider);
    if (!found) throw new MissingReferenceError(`provider '${body.provider}' not found`, 'body.provider');
    if (!found.models[body.modelId])
      throw new MissingReferenceError(`provider '${body.provider}' maps no model '${body.modelId}'`, 'body.provider');
    const route = await providers.getRoute(tenantId, body.modelId);
    if (route?.stable === body.provider)
      throw new ConflictError(`provider '${body.provider}' is already the stable`, { field: 'body.provider' });
    if (!route?.stable && !(await routing.getRoute(tenantId, body.modelId)))
      throw new ConflictError(`model '${body.modelId}' has no stable (deployed or provider) to canary against`, {
        field: 'body.provider',
      });
    const input = rolloutInputOf(
      tenantId,
      key,
      providerTarget(body.provider),
      { ...body, cluster: '' },
      { cpu: '0', gpu: 0, memory: '0' },
    );
    return { ...input, provider: body.provider };
  };

  // Sending a model's traffic to a provider is a tenant admin's decision (PUT /v1/provider-routes), and so is a
  // provider canary, which ends with the provider as the route's stable.
  app.addHook('preHandler', async (request) => {
    const body = request.body as { provider?: unknown } | undefined;
    if (
      request.method === 'POST' &&
      request.routeOptions.url === '/v1/deploy' &&
      body?.provider !== undefined &&
      request.principal &&
      !hasRole(request.principal, 'admin')
    )
      throw new ForbiddenError("a provider canary needs the 'admin' role, as provider routes do", {
        field: 'body.provider',
      });
  });

  await app.register(
    operationRoutes({
      contract: rolloutContract,
      tag: 'deployments',
      start: {
        path: '/deploy',
        summary: 'Roll a model version out as a canary (a Temporal workflow); one rollout per model at a time',
        body: deployOrProviderBody(Object.keys(clusterSettings), app.platform.podMetadataKeys),
        errors: [404, 409],
        statusUrl: (key) => `/v1/deployments/${key}`,
        links: deploymentLinks,
        plan: async (body, run) => {
          const { tenantId, key } = run;
          const model = await registry.getModel(tenantId, body.modelId);
          if (!model) throw new NotFoundError('model', body.modelId);
          const lock = {
            prepare: async (c: Parameters<typeof locks.acquire>[0]) => {
              const { heldBy } = await locks.acquire(c, {
                tenantId,
                modelId: body.modelId,
                deploymentId: key,
                workflowId: run.workflowId,
              });
              if (heldBy)
                throw new ConflictError(`model '${body.modelId}' has a rollout in progress: '${heldBy}'`, {
                  field: 'body.modelId',
                  deploymentId: heldBy,
                });
            },
            undo: (c: Parameters<typeof locks.release>[0]) => locks.release(c, tenantId, body.modelId, run.workflowId),
          };
          if (body.provider !== undefined)
            return {
              options: {
                args: [await providerCanaryInput(tenantId, key, { ...body, provider: body.provider })],
                typedSearchAttributes: [{ key: ModelIdKey, value: body.modelId }],
                staticSummary: `Canary ${body.modelId} to provider ${body.provider}`,
                workflowExecutionTimeout: '7 days',
              },
              ...lock,
            };
          const cluster = body.cluster;
          if (cluster === undefined)
            throw new BadRequestError('cluster is required to deploy a version', 'body.cluster');
          const versions = await registry.listVersions(tenantId, body.modelId);
          const version = body.version ?? versions.filter((v) => v.state === 'ready').at(-1)?.version;
          if (version === undefined)
            throw new ConflictError(`model '${body.modelId}' has no ready version to roll out`, {
              field: 'body.version',
            });
          const found = versions.find((v) => v.version === version);
          if (!found) throw new NotFoundError('version', `${body.modelId}@${version}`);
          if (found.state !== 'ready')
            throw new ConflictError(`version '${version}' is ${found.state}; only a ready version rolls out`, {
              field: 'body.version',
            });
          return {
            options: {
              // Resolved here, not in the workflow: its input keeps one shape, and the quota claim sees the GPUs.
              args: [
                rolloutInputOf(
                  tenantId,
                  key,
                  version,
                  { ...body, cluster },
                  resolveResources(body.resources, model.resources, clusterSettings[cluster]?.defaultResources),
                ),
              ],
              typedSearchAttributes: [{ key: ModelIdKey, value: body.modelId }],
              staticSummary: `Roll out ${body.modelId}@${version} on cluster ${cluster}`,
              // Pauses without a duration wait for a person; a week bounds a forgotten one.
              workflowExecutionTimeout: '7 days',
            },
            ...lock,
          };
        },
      },
      path: '/deployments/:id',
      read: { summary: 'Where a rollout stands: phase, step, weights, every analysis', response: RolloutRead },
    }),
  );

  for (const [action, { update, role }] of Object.entries(rolloutSteering)) {
    app.post(
      `/deployments/:id/${action}`,
      {
        preHandler: requireRole(role),
        schema: {
          tags: ['deployments'],
          summary: `${action[0]!.toUpperCase()}${action.slice(1)} a rollout`,
          params: IdParams,
          body: Type.Optional(Steering),
          response: { 200: RolloutStatusSchema, ...errorResponses(400, 404, 409) },
        },
      },
      async (request) => {
        const { handle } = await operationRun(
          temporal,
          rolloutContract,
          request.principal!.tenantId,
          request.params.id,
        );
        request.auditWorkflowId = handle.workflowId;
        // The validator refuses a wrong phase; an ended run cannot be steered either.
        return executeRunUpdate(
          handle,
          update,
          { by: request.principal!.subject, tenantId: request.principal!.tenantId, reason: request.body?.reason },
          `cannot ${action} deployment '${request.params.id}'`,
        );
      },
    );
  }
};
