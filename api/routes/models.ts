import { VERSION_KEYS } from '../../common/store/registry';
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ConflictError, NotFoundError } from '../../common/errors';
import { checkUriInScope } from '../../common/store/storage-scope';
import { ConversionTargets } from '../../contracts/conversion';
import { modelRegistryContract } from '../../contracts/model-registry';
import { ModelIdKey } from '../../contracts/search-attributes';
import type { registerModelVersion } from '../../workflows';
import { ConversionStore } from '../../common/store/conversions';
import { LineageStore, type LineageEntry } from '../../common/store/lineage';
import { FOREIGN_KEY_VIOLATION, inTransaction } from '../../common/store/pool';
import { RolloutLockStore } from '../../common/store/rollouts';
import { RoutingStore, type ModelRoute } from '../../common/store/routing';
import { ServedVersionStore } from '../../common/store/served-versions';
import { AutoscalerRead, AutoscalingBody, autoscalingOf, wakeAutoscaler } from '../autoscaling';
import { autoscalerStatusQuery, autoscalerWorkflowId } from '../../contracts/autoscaling';
import { WorkflowNotFoundError } from '@temporalio/client';
import { linkTo } from '../openapi-links';
import { requireRole } from '../plugins/auth';
import { MissingReferenceError, ObjectUri, StringEnum } from '../resource-schemas';
import { Model, modelAnswer } from './model-list';
import { idempotencyKeyOf, startOperation } from '../operations';
import {
  errorResponses,
  IdempotencyHeaders,
  NextCursor,
  pageQuerystring,
  ResourceId,
  VersionId,
  VersionParams,
} from '../schemas';

const VersionState = Type.Union([Type.Literal('registering'), Type.Literal('ready'), Type.Literal('failed')]);
const Version = Type.Object({
  modelId: Type.String(),
  version: Type.String(),
  artifactUri: Type.String(),
  state: VersionState,
  sizeBytes: Type.Union([Type.Integer(), Type.Null()]),
  checksum: Type.Union([Type.String(), Type.Null()]),
  etag: Type.Union([Type.String(), Type.Null()]),
  failureReason: Type.Union([Type.String(), Type.Null()]),
  workflowId: Type.String(),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});
const CreateVersion = Type.Object(
  {
    version: VersionId,
    artifactUri: { ...ObjectUri, description: `the model artifact: ${ObjectUri.description}` },
  },
  { additionalProperties: false },
);
const VersionAccepted = Type.Object({
  workflowId: Type.String(),
  modelId: Type.String(),
  version: Type.String(),
  state: VersionState,
  statusUrl: Type.String(),
});
const ModelParams = Type.Object({ modelId: ResourceId });
const Route = Type.Object({
  modelId: Type.String(),
  stable: Type.String(),
  canary: Type.Union([Type.String(), Type.Null()]),
  canaryWeight: Type.Integer(),
  autoscaling: Type.Union([AutoscalingBody, Type.Null()], {
    description: "the stable version's autoscaling settings (null: one replica)",
  }),
});
const PutRoute = Type.Object(
  {
    stable: VersionId,
    canary: Type.Optional(Type.Union([VersionId, Type.Null()])),
    canaryWeight: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 100,
        description: 'percent of weighted traffic for the canary; default 10; only with a canary',
      }),
    ),
    autoscaling: Type.Optional(
      Type.Union([AutoscalingBody, Type.Null()], {
        description:
          "the stable version's autoscaling settings (null: back to one replica); 409 for a version no rollout recorded",
      }),
    ),
  },
  {
    additionalProperties: false,
    // A weight without a canary version would weigh nothing.
    anyOf: [{ properties: { canaryWeight: { not: {} } } }, { required: ['canary'], properties: { canary: VersionId } }],
  },
);
const Artifact = Type.Object({
  kind: StringEnum(ConversionTargets),
  uri: Type.String(),
  sha256: Type.String(),
  sizeBytes: Type.Integer(),
  tritonRepositoryUri: Type.String(),
  conversionWorkflowId: Type.String(),
  createdAt: Type.String(),
});
const Artifacts = Type.Object({ modelId: Type.String(), version: Type.String(), artifacts: Type.Array(Artifact) });
const LINEAGE_STAGES = ['dataset', 'base', 'fine_tuned', 'converted', 'deployed'] as const;
const LineageStep = Type.Object(
  {
    stage: StringEnum(LINEAGE_STAGES),
  },
  {
    additionalProperties: true,
    description: "One step; its other fields depend on the stage (a workflowId but for 'dataset' and the root 'base')",
  },
);
const Lineage = Type.Object({ modelId: Type.String(), version: Type.String(), lineage: Type.Array(LineageStep) });

const versionLinks = (modelId: string, version: string) => ({
  getVersion: linkTo('GET /v1/models/{modelId}/versions/{version}', { parameters: { modelId, version } }),
  artifacts: linkTo('GET /v1/models/{modelId}/versions/{version}/artifacts', { parameters: { modelId, version } }),
  lineage: linkTo('GET /v1/models/{modelId}/versions/{version}/lineage', { parameters: { modelId, version } }),
});

interface FineTuneDetails {
  base?: { artifactUri?: string; checksum?: string };
  dataset?: { uri: string; sha256: string };
  method?: string;
  hyperparameters?: Record<string, unknown>;
  artifact?: { uri: string; sha256: string };
}

export const modelRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { registry, db, temporal, taskQueue, storageScopes } = app.platform;
  const routing = new RoutingStore(db);
  const served = new ServedVersionStore(db);
  const routeAnswer = async (tenantId: string, modelId: string, route: ModelRoute) => ({
    modelId,
    stable: route.stable,
    canary: route.canary,
    canaryWeight: route.canaryWeight,
    autoscaling: (await served.get({ tenantId, modelId, version: route.stable }))?.autoscaling ?? null,
  });
  const locks = new RolloutLockStore(db);
  const conversions = new ConversionStore(db);
  const lineage = new LineageStore(db);

  app.get(
    '/:modelId',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['models'],
        summary: 'Get a model',
        params: ModelParams,
        response: { 200: Model, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const model = await registry.getModel(tenantId, request.params.modelId);
      if (!model) throw new NotFoundError('model', request.params.modelId);
      return modelAnswer(model, tenantId);
    },
  );

  app.get(
    '/:modelId/versions',
    {
      preHandler: requireRole('viewer'),
      links: { 200: versionLinks('$request.path.modelId', '$response.body#/versions/0/version') },
      schema: {
        tags: ['models'],
        summary: "List a model's versions, oldest first",
        params: ModelParams,
        querystring: pageQuerystring(VERSION_KEYS),
        response: {
          200: Type.Object({ versions: Type.Array(Version), nextCursor: NextCursor }),
          ...errorResponses(400, 404),
        },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      if (!(await registry.getModel(tenantId, request.params.modelId)))
        throw new NotFoundError('model', request.params.modelId);
      const page = await registry.pageVersions(tenantId, request.params.modelId, request.query);
      return { versions: page.items, nextCursor: page.nextCursor };
    },
  );

  app.post(
    '/:modelId/versions',
    {
      preHandler: requireRole('developer'),
      links: { 202: versionLinks('$response.body#/modelId', '$response.body#/version') },
      schema: {
        tags: ['models'],
        summary: 'Register a model version (a workflow verifies the artifact in object storage)',
        params: ModelParams,
        headers: IdempotencyHeaders,
        body: CreateVersion,
        response: { 202: VersionAccepted, ...errorResponses(400, 404, 409, 422, 503) },
      },
    },
    async (request, reply) => {
      const tenantId = request.principal!.tenantId;
      const { modelId } = request.params;
      const { version, artifactUri } = request.body;
      // Both looked up at once; a path naming no model of the tenant's is 404 whatever the body says (the version's
      // foreign key checks again, in the claim's transaction).
      const [model, inScope] = await Promise.allSettled([
        registry.getModel(tenantId, modelId),
        checkUriInScope(storageScopes, tenantId, artifactUri, 'body.artifactUri'),
      ]);
      if (model.status === 'rejected') throw model.reason;
      if (!model.value) throw new NotFoundError('model', modelId);
      if (inScope.status === 'rejected') throw inScope.reason;
      const key = idempotencyKeyOf(request.headers['idempotency-key']);
      const { workflowId, fresh } = await startOperation<typeof registerModelVersion>(
        { db, temporal, taskQueue },
        {
          contract: modelRegistryContract,
          tenantId,
          key,
          request: { modelId, version, artifactUri },
          options: {
            args: [{ tenantId, modelId, version, artifactUri }],
            typedSearchAttributes: [{ key: ModelIdKey, value: modelId }],
            staticSummary: `Register ${modelId}@${version} from ${artifactUri}`,
            workflowExecutionTimeout: '2 hours',
          },
          prepare: async (c, id) => {
            const res = await registry
              .insertVersion(c, tenantId, { modelId, version, artifactUri, workflowId: id })
              .catch((err: unknown) => {
                // The model went away since the check above.
                if ((err as { code?: string }).code === FOREIGN_KEY_VIOLATION)
                  throw new NotFoundError('model', modelId);
                throw err;
              });
            if (!res.created) {
              throw new ConflictError(`version '${version}' of model '${modelId}' is already registered`, {
                field: 'body.version',
                workflowId: res.version.workflowId,
              });
            }
          },
          undo: (c) => registry.deleteVersion(c, tenantId, modelId, version),
        },
      );
      request.auditWorkflowId = workflowId;
      // A fresh claim has just inserted the version as registering; only a repeat reads what it has become.
      const state = fresh
        ? 'registering'
        : ((await registry.getVersion(tenantId, modelId, version))?.state ?? 'registering');
      return reply.status(202).send({
        workflowId,
        modelId,
        version,
        state,
        statusUrl: `/v1/models/${modelId}/versions/${encodeURIComponent(version)}`,
      });
    },
  );

  app.get(
    '/:modelId/versions/:version',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['models'],
        summary: 'Get a model version and its registration state',
        params: VersionParams,
        response: { 200: Version, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const v = await registry.getVersion(request.principal!.tenantId, request.params.modelId, request.params.version);
      if (!v) throw new NotFoundError('version', `${request.params.modelId}@${request.params.version}`);
      return v;
    },
  );

  app.get(
    '/:modelId/versions/:version/autoscaler',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['models'],
        summary:
          "A served version's autoscaler: settings, replicas and its decision log (time, metric, desired, applied)",
        params: VersionParams,
        response: { 200: AutoscalerRead, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const { modelId, version } = request.params;
      // Built from the caller's own tenant: no URL reaches another tenant's autoscaler.
      const handle = temporal.workflow.getHandle(autoscalerWorkflowId(request.principal!.tenantId, modelId, version));
      try {
        return await handle.query(autoscalerStatusQuery);
      } catch (err) {
        if (err instanceof WorkflowNotFoundError) throw new NotFoundError('autoscaler', `${modelId}@${version}`);
        throw err;
      }
    },
  );

  app.get(
    '/:modelId/route',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['admin'],
        summary: "Which versions serve a model's traffic, and the canary's share",
        params: ModelParams,
        response: { 200: Route, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const { modelId } = request.params;
      if (!(await registry.getModel(tenantId, modelId))) throw new NotFoundError('model', modelId);
      const route = await routing.getRoute(tenantId, modelId);
      if (!route) throw new NotFoundError('route', modelId);
      return routeAnswer(tenantId, modelId, route);
    },
  );

  app.put(
    '/:modelId/route',
    {
      preHandler: requireRole('operator'),
      schema: {
        tags: ['admin'],
        summary:
          "Set a model's stable and canary versions by hand (manual A/B); refused while a rollout runs on the model",
        params: ModelParams,
        body: PutRoute,
        response: { 200: Route, ...errorResponses(400, 404, 409) },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const { modelId } = request.params;
      const { stable, canary = null, canaryWeight } = request.body;
      const autoscaling = request.body.autoscaling && autoscalingOf(request.body.autoscaling, 'body.autoscaling');
      if (!(await registry.getModel(tenantId, modelId))) throw new NotFoundError('model', modelId);
      // The schema refuses a weight without a canary; that the two versions differ it cannot say.
      if (canary === stable)
        throw new ConflictError('canary must be another version than stable', { field: 'body.canary' });
      await inTransaction(db, async (c) => {
        for (const [field, version] of [
          ['stable', stable],
          ['canary', canary],
        ] as const) {
          if (version === null) continue;
          const v = await registry.getVersion(tenantId, modelId, version, c);
          if (!v) throw new MissingReferenceError(`model '${modelId}' has no version '${version}'`, `body.${field}`);
          if (v.state !== 'ready')
            throw new ConflictError(`version '${version}' is ${v.state}; only a ready version takes traffic`, {
              field: `body.${field}`,
            });
        }
        // Checked under the model's row lock, so a rollout starting now waits for this route and then owns routing.
        await locks.refuseWhileHeld(c, tenantId, modelId);
        await routing.setRoute(
          tenantId,
          modelId,
          { stable, canary, ...(canaryWeight === undefined ? {} : { canaryWeight }) },
          c,
        );
        if (
          autoscaling !== undefined &&
          !(await served.setAutoscaling({ tenantId, modelId, version: stable }, autoscaling, c))
        )
          throw new ConflictError(
            `version '${stable}' was not rolled out since autoscaling exists, so nothing records how to serve it; deploy it (POST /v1/deploy) first`,
            { field: 'body.autoscaling' },
          );
      });
      // Its autoscaler reads the settings on its next pass; started now, so settings alone are enough to scale.
      if (autoscaling) await wakeAutoscaler(temporal, taskQueue, { tenantId, modelId, version: stable });
      const route = (await routing.getRoute(tenantId, modelId))!;
      return routeAnswer(tenantId, modelId, route);
    },
  );

  app.get(
    '/:modelId/versions/:version/artifacts',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['conversions'],
        summary: "A model version's converted artifacts (onnx, onnx-int8, tensorrt) and their Triton repositories",
        params: VersionParams,
        response: { 200: Artifacts, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const { modelId, version } = request.params;
      if (!(await registry.getVersion(tenantId, modelId, version)))
        throw new NotFoundError('version', `${modelId}@${version}`);
      return { modelId, version, artifacts: await conversions.artifactsOf(tenantId, modelId, version) };
    },
  );

  app.get(
    '/:modelId/versions/:version/lineage',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['pipelines'],
        summary:
          "A version's lineage: dataset → base → fine-tuned → converted → deployed, each with the workflow that made it",
        params: VersionParams,
        response: { 200: Lineage, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const { modelId, version } = request.params;
      if (!(await registry.getVersion(tenantId, modelId, version)))
        throw new NotFoundError('version', `${modelId}@${version}`);
      const chain = await lineage.chainOf(tenantId, modelId, version);
      // chainOf answers nearest first; the lineage reads from the root.
      const fineTunes = chain.filter((e) => e.kind === 'fine_tune').reverse();
      const steps: ({ stage: (typeof LINEAGE_STAGES)[number] } & Record<string, unknown>)[] = [];
      if (fineTunes.length === 0) steps.push({ stage: 'base', modelId, version });
      fineTunes.forEach((e: LineageEntry, i) => {
        const d = e.details as FineTuneDetails;
        if (d.dataset) steps.push({ stage: 'dataset', uri: d.dataset.uri, sha256: d.dataset.sha256 });
        // A fine-tune of a fine-tuned version: its base is the previous fine-tuned step.
        if (i === 0 && e.parent)
          steps.push({
            stage: 'base',
            ...e.parent,
            artifactUri: d.base?.artifactUri ?? null,
            checksum: d.base?.checksum ?? null,
          });
        steps.push({
          stage: 'fine_tuned',
          modelId: e.modelId,
          version: e.version,
          workflowId: e.workflowId,
          method: d.method ?? null,
          hyperparameters: d.hyperparameters ?? null,
          artifact: d.artifact ?? null,
          at: e.createdAt,
        });
      });
      for (const a of await conversions.artifactsOf(tenantId, modelId, version)) {
        steps.push({
          stage: 'converted',
          modelId,
          version,
          kind: a.kind,
          uri: a.uri,
          sha256: a.sha256,
          tritonRepositoryUri: a.tritonRepositoryUri,
          workflowId: a.conversionWorkflowId,
          at: a.createdAt,
        });
      }
      for (const e of chain.filter((x) => x.kind === 'rollout' && x.modelId === modelId && x.version === version)) {
        steps.push({ stage: 'deployed', modelId, version, workflowId: e.workflowId, ...e.details, at: e.createdAt });
      }
      return { modelId, version, lineage: steps };
    },
  );
};
