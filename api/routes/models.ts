import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { BadRequestError, ConflictError, NotFoundError } from '../../common/errors';
import { parseObjectUri, InvalidObjectUriError } from '../../common/objectstore';
import { modelRegistryContract } from '../../contracts/model-registry';
import { ModelIdKey } from '../../contracts/search-attributes';
import type { registerModelVersion } from '../../workflows';
import { requireRole } from '../plugins/auth';
import { idempotencyKeyOf, startOperation } from '../operations';
import { errorResponses, IdempotencyHeaders, ResourceId, VersionId } from '../schemas';

const ModelSummary = Type.Object({ id: Type.String(), name: Type.String(), description: Type.String() });
const OpenAiModel = Type.Object({
  id: Type.String(),
  object: Type.Literal('model'),
  created: Type.Integer(),
  owned_by: Type.String(),
});
const ModelList = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(OpenAiModel),
  models: Type.Array(ModelSummary),
});
const Model = Type.Object({ id: Type.String(), name: Type.String(), description: Type.String(), createdAt: Type.String() });
const CreateModel = Type.Object(
  {
    id: ResourceId,
    name: Type.String({ minLength: 1, maxLength: 200 }),
    description: Type.String({ maxLength: 2000, default: '' }),
  },
  { additionalProperties: false },
);
const Version = Type.Object({
  modelId: Type.String(),
  version: Type.String(),
  artifactUri: Type.String(),
  state: Type.Union([Type.Literal('registering'), Type.Literal('ready'), Type.Literal('failed')]),
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
    artifactUri: Type.String({ minLength: 1, description: 's3://bucket/key of the model artifact' }),
  },
  { additionalProperties: false },
);
const VersionAccepted = Type.Object({
  workflowId: Type.String(),
  modelId: Type.String(),
  version: Type.String(),
  state: Type.String(),
  statusUrl: Type.String(),
});
const ModelParams = Type.Object({ modelId: ResourceId });
const VersionParams = Type.Object({ modelId: ResourceId, version: Type.String() });

export const modelRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { registry, db, temporal, taskQueue } = app.platform;

  app.get(
    '/',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['models'],
        summary: "List the tenant's models (OpenAI list shape and the LLMHub shape in one body)",
        response: { 200: ModelList, ...errorResponses() },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const models = await registry.listModels(tenantId);
      return {
        object: 'list' as const,
        data: models.map((m) => ({ id: m.id, object: 'model' as const, created: Math.floor(Date.parse(m.createdAt) / 1000), owned_by: tenantId })),
        models: models.map((m) => ({ id: m.id, name: m.name, description: m.description })),
      };
    },
  );

  app.post(
    '/',
    {
      preHandler: requireRole('developer'),
      schema: { tags: ['models'], summary: 'Create a model', body: CreateModel, response: { 201: Model, ...errorResponses(400, 409) } },
    },
    async (request, reply) => {
      const created = await registry.createModel(request.principal!.tenantId, {
        id: request.body.id,
        name: request.body.name,
        description: request.body.description ?? '',
      });
      if (!created) throw new ConflictError(`model '${request.body.id}' already exists`, { field: 'body.id' });
      return reply.status(201).send(created);
    },
  );

  app.get(
    '/:modelId',
    {
      preHandler: requireRole('viewer'),
      schema: { tags: ['models'], summary: 'Get a model', params: ModelParams, response: { 200: Model, ...errorResponses(400, 404) } },
    },
    async (request) => {
      const model = await registry.getModel(request.principal!.tenantId, request.params.modelId);
      if (!model) throw new NotFoundError('model', request.params.modelId);
      return model;
    },
  );

  app.get(
    '/:modelId/versions',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['models'],
        summary: "List a model's versions",
        params: ModelParams,
        response: { 200: Type.Object({ versions: Type.Array(Version) }), ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      if (!(await registry.getModel(tenantId, request.params.modelId))) throw new NotFoundError('model', request.params.modelId);
      return { versions: await registry.listVersions(tenantId, request.params.modelId) };
    },
  );

  app.post(
    '/:modelId/versions',
    {
      preHandler: requireRole('developer'),
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
      try {
        parseObjectUri(artifactUri);
      } catch (err) {
        if (err instanceof InvalidObjectUriError) throw new BadRequestError(err.message, 'body.artifactUri');
        throw err;
      }
      const key = idempotencyKeyOf(request.headers['idempotency-key']);
      const { workflowId } = await startOperation<typeof registerModelVersion>(
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
            if (!(await registry.getModel(tenantId, modelId, c))) throw new NotFoundError('model', modelId);
            const res = await registry.insertVersion(c, tenantId, { modelId, version, artifactUri, workflowId: id });
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
      const current = await registry.getVersion(tenantId, modelId, version);
      return reply.status(202).send({
        workflowId,
        modelId,
        version,
        state: current?.state ?? 'registering',
        statusUrl: `/v1/models/${modelId}/versions/${encodeURIComponent(version)}`,
      });
    },
  );

  app.get(
    '/:modelId/versions/:version',
    {
      preHandler: requireRole('viewer'),
      schema: { tags: ['models'], summary: 'Get a model version and its registration state', params: VersionParams, response: { 200: Version, ...errorResponses(400, 404) } },
    },
    async (request) => {
      const v = await registry.getVersion(request.principal!.tenantId, request.params.modelId, request.params.version);
      if (!v) throw new NotFoundError('version', `${request.params.modelId}@${request.params.version}`);
      return v;
    },
  );
};
