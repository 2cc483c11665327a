import { Type, type TSchema } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ConflictError } from '../../common/errors';
import { Resources, servingResourcesOf } from '../../common/resources';
import type { RegistryStore } from '../../common/store/registry';
import { linkTo } from '../openapi-links';
import { requireRole } from '../plugins/auth';
import { MODEL_KEYS } from '../../common/store/registry';
import { errorResponses, NextCursor, pageQuerystring, ResourceId } from '../schemas';

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
const ModelType = Type.Union([Type.Literal('chat'), Type.Literal('completion'), Type.Literal('embedding')], {
  description: 'what the model serves',
});
const Precision = Type.Union(
  [
    Type.Literal('fp32'),
    Type.Literal('fp16'),
    Type.Literal('bf16'),
    Type.Literal('fp8'),
    Type.Literal('int8'),
    Type.Literal('int4'),
  ],
  { description: 'numeric format of the weights' },
);
const ContextLength = Type.Integer({ minimum: 1, maximum: 10_000_000, description: 'tokens' });
const ParameterCount = Type.Integer({ minimum: 1, maximum: 100_000_000_000_000, description: 'e.g. 7000000000' });
const ModelResources = {
  ...Resources,
  description: 'what one serving replica requests; POST /v1/deploy uses it when its body names no resources',
};
/** The metadata as answered: null where the creator did not say. */
const Metadata = {
  type: Nullable(ModelType),
  contextLength: Nullable(Type.Integer()),
  parameterCount: Nullable(Type.Integer()),
  precision: Nullable(Precision),
  resources: Nullable(
    Type.Object({ cpu: Type.String(), gpu: Type.Integer(), memory: Type.String() }, { additionalProperties: false }),
  ),
};
const ModelSummary = Type.Object({ id: Type.String(), name: Type.String(), description: Type.String(), ...Metadata });
/** OpenAI's model object fields, so its clients' `models.list` and `models.retrieve` read ours. */
const OpenAiFields = {
  object: Type.Literal('model'),
  created: Type.Integer({ description: 'Unix seconds (OpenAI shape); createdAt holds the same instant' }),
  owned_by: Type.String({ description: 'the owning tenant (OpenAI shape)' }),
};
const OpenAiModel = Type.Object({ id: Type.String(), ...OpenAiFields });
const ModelList = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(OpenAiModel),
  models: Type.Array(ModelSummary),
  has_more: Type.Boolean({ description: 'OpenAI style: another page follows' }),
  nextCursor: NextCursor,
});
export const Model = Type.Object({
  id: Type.String(),
  name: Type.String(),
  description: Type.String(),
  ...Metadata,
  createdAt: Type.String(),
  ...OpenAiFields,
});

/** A stored model with OpenAI's model fields beside the registry's own. */
export function modelAnswer<M extends { id: string; createdAt: string }>(model: M, tenantId: string) {
  return {
    ...model,
    object: 'model' as const,
    created: Math.floor(Date.parse(model.createdAt) / 1000),
    owned_by: tenantId,
  };
}
const CreateModel = Type.Object(
  {
    id: ResourceId,
    name: Type.String({ minLength: 1, maxLength: 200 }),
    description: Type.String({ maxLength: 2000, default: '' }),
    type: Type.Optional(ModelType),
    contextLength: Type.Optional(ContextLength),
    parameterCount: Type.Optional(ParameterCount),
    precision: Type.Optional(Precision),
    resources: Type.Optional(ModelResources),
  },
  { additionalProperties: false },
);

/**
 * From an answer naming a model (its `id` or `modelId`) to the reads and steering calls of it; not to its route, which
 * exists only once a rollout or PUT .../route set one.
 */
const modelLinks = (modelId: string) => ({
  get: linkTo('GET /v1/models/{modelId}', { parameters: { modelId } }),
  versions: linkTo('GET /v1/models/{modelId}/versions', { parameters: { modelId } }),
  registerVersion: linkTo('POST /v1/models/{modelId}/versions', { parameters: { modelId } }),
  setRoute: linkTo('PUT /v1/models/{modelId}/route', { parameters: { modelId } }),
});

/**
 * GET and POST /v1/models: the OpenAI model list, and model creation on the same path. Both roles serve them: the
 * gateway answers clients' GET /v1/models, and a path-routing Ingress sends the path's every method to one place.
 */
export const modelListRoutes: FastifyPluginAsyncTypebox<{ registry: RegistryStore }> = async (app, { registry }) => {
  app.get(
    '/',
    {
      preHandler: requireRole('viewer'),
      links: { 200: modelLinks('$response.body#/data/0/id') },
      schema: {
        tags: ['models'],
        summary: "List the tenant's models by id (OpenAI list shape and the LLMHub shape in one body)",
        querystring: pageQuerystring(MODEL_KEYS),
        response: { 200: ModelList, ...errorResponses(400) },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const { items: models, nextCursor } = await registry.listModels(tenantId, request.query);
      return {
        object: 'list' as const,
        data: models.map((m) => {
          const { id, object, created, owned_by } = modelAnswer(m, tenantId);
          return { id, object, created, owned_by };
        }),
        models: models.map(({ createdAt: _createdAt, ...m }) => m),
        has_more: nextCursor !== null,
        nextCursor,
      };
    },
  );

  app.post(
    '/',
    {
      preHandler: requireRole('developer'),
      links: { 201: modelLinks('$response.body#/id') },
      schema: {
        tags: ['models'],
        summary: 'Create a model',
        body: CreateModel,
        response: { 201: Model, ...errorResponses(400, 409) },
      },
    },
    async (request, reply) => {
      const { resources, ...rest } = request.body;
      const tenantId = request.principal!.tenantId;
      const created = await registry.createModel(tenantId, {
        ...rest,
        description: rest.description ?? '',
        ...(resources ? { resources: servingResourcesOf(resources) } : {}),
      });
      if (!created) throw new ConflictError(`model '${request.body.id}' already exists`, { field: 'body.id' });
      return reply.status(201).send(modelAnswer(created, tenantId));
    },
  );
};
