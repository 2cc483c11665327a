import { createHash } from 'node:crypto';
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ConflictError, ForbiddenError, PlatformError } from '../../common/errors';
import {
  DEFAULT_HYPERPARAMETERS,
  FINE_TUNE_METHODS,
  HYPERPARAMETER_BOUNDS,
  fineTuneContract,
  type FineTuneInput,
  type Hyperparameters,
} from '../../contracts/fine-tune';
import { parseObjectUri, type ObjectStore } from '../../common/objectstore';
import { checkUriInScope, type StorageScopeStore } from '../../common/store/storage-scope';
import { ModelIdKey } from '../../contracts/search-attributes';
import { GpuQuotaStore } from '../../common/store/gpu-quota';
import type { RegistryStore } from '../../common/store/registry';
import { requireRole } from '../plugins/auth';
import { operationRoutes } from '../operation-routes';
import { ClusterName, FineTuneRead } from '../operation-schemas';
import { linkTo } from '../openapi-links';
import { errorResponses, ResourceId, VersionId } from '../schemas';
import { Cpu, Memory } from '../../common/resources';

/** One hyperparameter with its bounds and documented default (contracts/fine-tune.ts). */
const hp = (name: keyof Hyperparameters) => {
  const { integer, ...bounds } = HYPERPARAMETER_BOUNDS[name];
  return Type.Optional((integer ? Type.Integer : Type.Number)({ ...bounds, default: DEFAULT_HYPERPARAMETERS[name] }));
};
const HyperparameterSchema = Type.Object(
  {
    totalSteps: hp('totalSteps'),
    batchSize: hp('batchSize'),
    learningRate: hp('learningRate'),
    loraRank: hp('loraRank'),
    loraAlpha: hp('loraAlpha'),
    checkpointEverySteps: hp('checkpointEverySteps'),
    evalFraction: hp('evalFraction'),
    seed: hp('seed'),
  },
  { additionalProperties: false, default: {} },
);
export const fineTuneBody = (clusters: string[]) =>
  Type.Object(
    {
      baseModel: Type.Object({ modelId: ResourceId, version: VersionId }, { additionalProperties: false }),
      datasetUri: Type.String({
        pattern: '^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^\\u0000]+$',
        maxLength: 1024,
        description: "JSONL in object storage, s3://bucket/key, in the tenant's storage scope",
      }),
      method: Type.Union(FINE_TUNE_METHODS.map((m) => Type.Literal(m))),
      hyperparameters: Type.Optional(HyperparameterSchema),
      resources: Type.Object(
        {
          gpuCount: Type.Integer({ minimum: 1, maximum: 64 }),
          gpuProduct: Type.Optional(
            Type.String({
              pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$',
              description: 'nvidia.com/gpu.product node label',
            }),
          ),
          migProfile: Type.Optional(
            Type.String({
              pattern: '^[1-7]g\\.[0-9]{1,3}gb$',
              description: 'e.g. 1g.10gb: asks for nvidia.com/mig-<profile>',
            }),
          ),
          cpu: Type.Optional(Cpu),
          memory: Type.Optional(Memory),
        },
        { additionalProperties: false },
      ),
      cluster: ClusterName(clusters, 'a configured cluster (LLMHUB_CLUSTERS) whose GPU nodes run the Job'),
      priority: Type.Integer({ minimum: 0, maximum: 1000, default: 0 }),
      /** Where the result is registered; default: a new version of the base model. */
      output: Type.Optional(
        Type.Object(
          { modelId: Type.Optional(ResourceId), version: Type.Optional(VersionId) },
          { additionalProperties: false },
        ),
      ),
      maxResumptions: Type.Integer({ minimum: 0, maximum: 20, default: 3 }),
      deadlineSeconds: Type.Integer({ minimum: 60, maximum: 30 * 86_400, default: 86_400 }),
    },
    { additionalProperties: false },
  );
export type FineTuneRequest = Static<ReturnType<typeof fineTuneBody>>;
const Quota = Type.Object({ gpus: Type.Integer({ minimum: 0, maximum: 100_000 }) }, { additionalProperties: false });
const QuotaUsage = Type.Object({
  gpus: Type.Integer(),
  inUse: Type.Integer(),
  waiting: Type.Integer(),
  held: Type.Object(
    { serving: Type.Integer(), fineTunes: Type.Integer(), conversions: Type.Integer() },
    { description: 'GPUs held (inUse) by serving Deployments, fine-tune runs and GPU conversion Jobs' },
  ),
});

const notFound = (message: string, field: string) => new PlatformError(404, 'not_found', message, { field });

/** Everything checked before anything is started: a refused request leaves no workflow, claim or Job behind. */
export async function validateFineTune(
  deps: {
    registry: RegistryStore;
    objects: ObjectStore;
    quotas: GpuQuotaStore;
    storageScopes: StorageScopeStore;
  },
  tenantId: string,
  body: FineTuneRequest,
  id: string,
  /** Names the body's part in errors (a pipeline nests the fine-tune). */
  at = 'body',
): Promise<Omit<FineTuneInput, 'fineTuneId'>> {
  const { registry, objects, quotas, storageScopes } = deps;
  const quota = await quotas.quotaOf(tenantId);
  // Well-formed, but more than the tenant's quota (which operators set) allows: a conflict with that setting.
  if (body.resources.gpuCount > quota) {
    throw new ConflictError(
      `resources.gpuCount ${body.resources.gpuCount} exceeds the tenant's GPU quota of ${quota}; it could never start`,
      { field: `${at}.resources.gpuCount`, quota },
    );
  }
  const { modelId, version } = body.baseModel;
  if (!(await registry.getModel(tenantId, modelId)))
    throw notFound(`model '${modelId}' not found`, `${at}.baseModel.modelId`);
  const base = await registry.getVersion(tenantId, modelId, version);
  if (!base) throw notFound(`version '${modelId}@${version}' not found`, `${at}.baseModel.version`);
  if (base.state !== 'ready')
    throw new ConflictError(
      `version '${modelId}@${version}' is ${base.state}; only a ready version can be fine-tuned`,
      { field: `${at}.baseModel.version` },
    );
  const outModel = body.output?.modelId ?? modelId;
  if (!(await registry.getModel(tenantId, outModel)))
    throw notFound(`model '${outModel}' not found`, `${at}.output.modelId`);
  const outVersion =
    body.output?.version ?? `${version.slice(0, 50)}-ft-${createHash('sha256').update(id).digest('hex').slice(0, 8)}`;
  const taken = await registry.getVersion(tenantId, outModel, outVersion);
  if (taken && taken.workflowId !== id)
    throw new ConflictError(`version '${outModel}@${outVersion}' already exists`, { field: `${at}.output.version` });
  // Before the HEAD: a URI outside the scope gets the same answer whether its object exists or not.
  await checkUriInScope(storageScopes, tenantId, body.datasetUri, `${at}.datasetUri`);
  if (!(await objects.head(parseObjectUri(body.datasetUri))))
    throw notFound(`dataset ${body.datasetUri} does not exist in object storage`, `${at}.datasetUri`);
  return {
    tenantId,
    cluster: body.cluster,
    base: { modelId, version },
    output: { modelId: outModel, version: outVersion },
    datasetUri: body.datasetUri,
    method: body.method,
    hyperparameters: { ...DEFAULT_HYPERPARAMETERS, ...body.hyperparameters },
    resources: {
      gpuCount: body.resources.gpuCount,
      ...(body.resources.gpuProduct ? { gpuProduct: body.resources.gpuProduct } : {}),
      ...(body.resources.migProfile ? { migProfile: body.resources.migProfile } : {}),
      cpu: String(body.resources.cpu ?? '4'),
      memory: body.resources.memory ?? '16Gi',
    },
    priority: body.priority,
    maxResumptions: body.maxResumptions,
    jobDeadlineSeconds: body.deadlineSeconds,
  };
}

const byFineTuneId = { parameters: { id: '$response.body#/fineTuneId' } };

export const fineTuneRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { registry, db, objects, storageScopes } = app.platform;
  const quotas = new GpuQuotaStore(db);

  await app.register(
    operationRoutes({
      contract: fineTuneContract,
      tag: 'fine-tunes',
      start: {
        path: '/fine-tunes',
        summary:
          'Fine-tune a model version on GPUs (LoRA, QLoRA or full) as a Temporal workflow; queued while the tenant GPU quota is used up',
        body: fineTuneBody(Object.keys(app.platform.clusters)),
        errors: [404, 409],
        statusUrl: (key) => `/v1/fine-tunes/${key}`,
        links: {
          status: linkTo('GET /v1/fine-tunes/{id}', byFineTuneId),
          cancel: linkTo('POST /v1/fine-tunes/{id}/cancel', byFineTuneId),
        },
        plan: async (body, run) => {
          const input: FineTuneInput = {
            ...(await validateFineTune(
              { registry, objects, quotas, storageScopes },
              run.tenantId,
              body,
              run.workflowId,
            )),
            fineTuneId: run.key,
          };
          return {
            options: {
              args: [input],
              typedSearchAttributes: [{ key: ModelIdKey, value: input.output.modelId }],
              staticSummary: `Fine-tune ${input.base.modelId}@${input.base.version} (${input.method}, ${input.resources.gpuCount} GPU) into ${input.output.modelId}@${input.output.version}`,
              // Queue time plus every attempt's deadline bounds the whole run.
              workflowExecutionTimeout: `${Math.min(input.jobDeadlineSeconds * (input.maxResumptions + 1) + 7 * 86_400, 60 * 86_400)}s`,
            },
          };
        },
      },
      path: '/fine-tunes/:id',
      read: {
        summary: 'Where a fine-tune stands: phase, queue position, Job, loss curve, result',
        answer: async (run) => {
          const status = await run.status();
          const position =
            status.phase === 'queued' ? await quotas.positionOf(run.tenantId, run.handle.workflowId) : undefined;
          return {
            workflowId: run.handle.workflowId,
            workflowStatus: run.workflowStatus,
            ...status,
            queue: position ? { position } : null,
          };
        },
        response: FineTuneRead,
      },
      cancel: { summary: 'Cancel a fine-tune: its Job is deleted and its GPU claim (held or queued) released' },
    }),
  );

  app.get(
    '/quotas/gpu',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['fine-tunes'],
        summary:
          "The tenant's one GPU quota and what holds it (serving Deployments, fine-tunes, GPU conversions); waiting: fine-tunes and conversions queued for GPUs",
        response: { 200: QuotaUsage, ...errorResponses() },
      },
    },
    async (request) => quotas.usage(request.principal!.tenantId),
  );

  app.put(
    '/quotas/gpu',
    {
      preHandler: requireRole('admin'),
      schema: {
        tags: ['fine-tunes'],
        deprecated: true,
        summary:
          "Refused (403): a tenant's GPU quota is set by platform operators (PUT /v1/platform/tenants/{id}/gpu-quota)",
        body: Quota,
        response: errorResponses(400),
      },
    },
    async () => {
      throw new ForbiddenError(
        "a tenant's GPU quota is set by platform operators (PUT /v1/platform/tenants/{id}/gpu-quota)",
      );
    },
  );
};
