import { Type, type Static } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { BadRequestError, ConflictError, NotFoundError } from '../../common/errors';
import { forbiddenEnvName, forbiddenPodMetadataKey } from '../../common/workload-policy';
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
import { resolveResources, Resources, toCores } from '../../common/resources';
import { ModelIdKey } from '../../contracts/search-attributes';
import { RolloutLockStore } from '../../common/store/rollouts';
import { requireRole } from '../plugins/auth';
import { canonicalHash } from '../../common/canonical';
import { executeRunUpdate, IdParams, operationRoutes } from '../operation-routes';
import { operationRun } from '../operations';
import { errorResponses, ResourceId, VersionId } from '../schemas';

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
export const Deploy = Type.Object(
  {
    modelId: ResourceId,
    cluster: Type.String({ minLength: 1, maxLength: 63 }),
    resources: Type.Optional({
      ...Resources,
      description:
        "default: the model's resources, else the cluster's defaultResources (LLMHUB_CLUSTERS), else 1 cpu, 0 gpu, 4Gi",
    }),
    env: Type.Record(
      Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$' }),
      Type.Union([Type.String({ maxLength: 4096 }), SecretRef]),
      { default: {} },
    ),
    version: Type.Optional(VersionId),
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
                annotations: Type.Optional(
                  Type.Record(Type.String({ maxLength: 63 }), Type.String({ maxLength: 4096 }), { maxProperties: 32 }),
                ),
                labels: Type.Optional(
                  Type.Record(
                    Type.String({ maxLength: 63 }),
                    Type.String({ pattern: '^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$' }),
                    { maxProperties: 32 },
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
export type DeployBody = Static<typeof Deploy>;
const Steering = Type.Object(
  { reason: Type.Optional(Type.String({ maxLength: 1000 })) },
  { additionalProperties: false },
);
// A secret value typed into a request would land in the workflow history; such names must use {secretRef}.
const SECRET_NAME = /(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)/i;

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
  };
}

/** The checks beyond the schema; `at` names the body's part in errors (a pipeline nests the rollout). */
export function checkDeployBody(
  body: Pick<DeployBody, 'cluster' | 'resources' | 'env' | 'strategy'>,
  clusters: Set<string>,
  podMetadataKeys: readonly string[],
  at = 'body',
): void {
  if (!clusters.has(body.cluster))
    throw new BadRequestError(
      `unknown cluster '${body.cluster}' (configured: ${[...clusters].join(', ')})`,
      `${at}.cluster`,
    );
  if (body.resources && !(toCores(body.resources.cpu) > 0))
    throw new BadRequestError('resources.cpu must be more than 0', `${at}.resources.cpu`);
  for (const [name, value] of Object.entries(body.env ?? {})) {
    const forbidden = forbiddenEnvName(name);
    if (forbidden) throw new BadRequestError(`env ${forbidden}`, `${at}.env.${name}`);
    if (typeof value === 'string' && SECRET_NAME.test(name))
      throw new BadRequestError(
        `env ${name} looks like a secret: pass {"secretRef":{"name","key"}} instead of its value`,
        `${at}.env.${name}`,
      );
  }
  for (const kind of ['annotations', 'labels'] as const) {
    for (const key of Object.keys(body.strategy?.canaryMetadata?.[kind] ?? {})) {
      const forbidden = forbiddenPodMetadataKey(key, podMetadataKeys);
      if (forbidden) throw new BadRequestError(forbidden, `${at}.strategy.canaryMetadata.${kind}.${key}`);
    }
  }
}

export const deploymentRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { registry, db, temporal } = app.platform;
  const clusterSettings = app.platform.clusters;
  const clusters = new Set(Object.keys(clusterSettings));
  const locks = new RolloutLockStore(db);

  await app.register(
    operationRoutes({
      contract: rolloutContract,
      tag: 'deployments',
      start: {
        path: '/deploy',
        summary: 'Roll a model version out as a canary (a Temporal workflow); one rollout per model at a time',
        body: Deploy,
        errors: [404, 409],
        statusUrl: (key) => `/v1/deployments/${key}`,
        plan: async (body, run) => {
          const { tenantId, key } = run;
          checkDeployBody(body, clusters, app.platform.podMetadataKeys);
          const model = await registry.getModel(tenantId, body.modelId);
          if (!model) throw new NotFoundError('model', body.modelId);
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
                  body,
                  resolveResources(body.resources, model.resources, clusterSettings[body.cluster]?.defaultResources),
                ),
              ],
              typedSearchAttributes: [{ key: ModelIdKey, value: body.modelId }],
              staticSummary: `Roll out ${body.modelId}@${version} on cluster ${body.cluster}`,
              // Pauses without a duration wait for a person; a week bounds a forgotten one.
              workflowExecutionTimeout: '7 days',
            },
            prepare: async (c) => {
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
            undo: (c) => locks.release(c, tenantId, body.modelId, run.workflowId),
          };
        },
      },
      path: '/deployments/:id',
      read: { summary: 'Where a rollout stands: phase, step, weights, every analysis' },
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
          response: errorResponses(400, 404, 409),
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
