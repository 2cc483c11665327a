import { Type, type Static } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { conversionContract, ConversionTargets } from '../../contracts/conversion';
import type { ClusterSettings } from '../../common/config';
import { conversionClaimOf, conversionInputOf, conversionOptionsOf } from '../../common/conversion-plan';
import { NotFoundError } from '../../common/errors';
import { workflowId } from '../../contracts/operations';
import { ModelIdKey } from '../../contracts/search-attributes';
import { ConversionStore, type ConversionRecord } from '../../common/store/conversions';
import type { convertModel } from '../../workflows';
import { requireRole } from '../plugins/auth';
import { operationRoutes, type Links } from '../operation-routes';
import { ClusterName, ConversionOutcome, ConversionRead, ConversionStateSchema } from '../operation-schemas';
import { linkTo } from '../openapi-links';
import { idempotencyKeyOf, startOperation } from '../operations';
import { errorResponses, IdempotencyHeaders, ResourceId, VERSION_PATTERN } from '../schemas';

const Tolerance = Type.Number({
  exclusiveMinimum: 0,
  maximum: 1000,
  description: 'maximum relative error: max |y - y_ref| / max |y_ref|',
});
// Inline samples travel in the workflow input, so they are bounded well below Temporal's payload limits (16,384
// values) and any body the bounds allow stays under the API's body limit.
const MAX_SAMPLE_ROWS = 64;
const MAX_SAMPLE_WIDTH = 256;
/** The clusters that can run conversion Jobs: Kubernetes ones, not those that serve models as local processes. */
export const conversionClusters = (clusters: ClusterSettings): string[] =>
  Object.entries(clusters)
    .filter(([, c]) => c.runtime !== 'process')
    .map(([name]) => name);

export const convertBody = (clusters: string[]) =>
  Type.Object(
    {
      modelId: ResourceId,
      version: Type.Optional(
        Type.String({ pattern: VERSION_PATTERN, description: 'default: the newest ready version' }),
      ),
      cluster: ClusterName(
        clusters,
        'the Kubernetes cluster (LLMHUB_CLUSTERS) whose nodes run the conversion Jobs; clusters that serve models as local processes cannot',
      ),
      targets: Type.Array(Type.Union(ConversionTargets.map((t) => Type.Literal(t))), {
        minItems: 1,
        maxItems: ConversionTargets.length,
        uniqueItems: true,
      }),
      precision: Type.Optional(
        Type.Union([Type.Literal('fp32'), Type.Literal('fp16')], {
          description: 'TensorRT engine precision (default fp16)',
        }),
      ),
      validation: Type.Optional(
        Type.Object(
          {
            samples: Type.Optional(
              Type.Array(Type.Array(Type.Number(), { minItems: 1, maxItems: MAX_SAMPLE_WIDTH }), {
                minItems: 1,
                maxItems: MAX_SAMPLE_ROWS,
                description: "input rows of the model's input width, all of the same length",
              }),
            ),
            sampleCount: Type.Optional(
              Type.Integer({
                minimum: 1,
                maximum: 1024,
                description: 'generated standard-normal rows when no samples are given (default 32)',
              }),
            ),
            seed: Type.Optional(Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1 })),
            tolerance: Type.Optional(
              Type.Object(
                {
                  onnx: Type.Optional(Tolerance),
                  'onnx-int8': Type.Optional(Tolerance),
                  tensorrt: Type.Optional(Tolerance),
                },
                { additionalProperties: false },
              ),
            ),
          },
          { additionalProperties: false },
        ),
      ),
      profile: Type.Optional(
        Type.Object(
          {
            runs: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
            batch: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
          },
          { additionalProperties: false },
        ),
      ),
    },
    { additionalProperties: false },
  );
export type ConvertBody = Static<ReturnType<typeof convertBody>>;

const Started = Type.Object({
  conversionId: Type.String(),
  workflowId: Type.String(),
  memoized: Type.Boolean(),
  state: ConversionStateSchema,
  statusUrl: Type.String(),
  result: Type.Optional({
    ...ConversionOutcome,
    description: 'the stored outcome, when the conversion has finished',
  }),
});
const byConversionId = { parameters: { id: '$response.body#/conversionId' } };
/** From a started (or memoised) conversion to its status and its cancel. */
const conversionLinks: Links = {
  status: linkTo('GET /v1/conversions/{id}', byConversionId),
  cancel: linkTo('POST /v1/conversions/{id}/cancel', byConversionId),
};

/** Thrown inside the start's transaction when another live conversion holds the memo key: nothing is written. */
class MemoHit extends Error {
  constructor(readonly record: ConversionRecord) {
    super('memoised');
  }
}

export const conversionRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { registry, db, temporal, taskQueue } = app.platform;
  const store = new ConversionStore(db);
  const statusUrl = (id: string) => `/v1/conversions/${id}`;
  const resultOf = (r: ConversionRecord) =>
    r.state === 'running'
      ? undefined
      : { targets: r.targets, tritonRepositoryUri: r.tritonRepositoryUri, error: r.error };

  app.post(
    '/conversions',
    {
      preHandler: requireRole('developer'),
      links: { 200: conversionLinks, 202: conversionLinks },
      schema: {
        tags: ['conversions'],
        summary:
          'Convert a model version to ONNX / int8 ONNX / TensorRT, checked and published as a Triton repository; memoised',
        headers: IdempotencyHeaders,
        body: convertBody(conversionClusters(app.platform.clusters)),
        response: { 200: Started, 202: Started, ...errorResponses(400, 404, 409, 422, 503) },
      },
    },
    async (request, reply) => {
      const tenantId = request.principal!.tenantId;
      const body = request.body;
      const key = idempotencyKeyOf(request.headers['idempotency-key']);
      const id = workflowId(conversionContract.kind, tenantId, key);
      const input = await conversionInputOf(registry, {
        tenantId,
        conversionId: key,
        workflowId: id,
        modelId: body.modelId,
        version: body.version,
        cluster: body.cluster,
        options: conversionOptionsOf(body),
      });
      const { version, options } = input;
      try {
        await startOperation<typeof convertModel>(
          { db, temporal, taskQueue },
          {
            contract: conversionContract,
            tenantId,
            key,
            request: body,
            options: {
              args: [input],
              typedSearchAttributes: [{ key: ModelIdKey, value: body.modelId }],
              staticSummary: `Convert ${body.modelId}@${version} to ${options.targets.join(', ')}`,
              workflowExecutionTimeout: '1 day',
            },
            prepare: async (c) => {
              const { existing } = await store.claim(c, tenantId, conversionClaimOf(input));
              if (existing) throw new MemoHit(existing);
            },
            undo: (c) => store.remove(c, tenantId, id),
          },
        );
      } catch (err) {
        if (!(err instanceof MemoHit)) throw err;
        const r = err.record;
        request.auditWorkflowId = r.workflowId;
        // Finished: the stored result at once. Still building: the running conversion, which will serve this request too.
        return reply.status(r.state === 'running' ? 202 : 200).send({
          conversionId: r.conversionId,
          workflowId: r.workflowId,
          memoized: true,
          state: r.state,
          statusUrl: statusUrl(r.conversionId),
          result: resultOf(r),
        });
      }
      request.auditWorkflowId = id;
      const row = await store.get(tenantId, key);
      return reply.status(row && row.state !== 'running' ? 200 : 202).send({
        conversionId: key,
        workflowId: id,
        memoized: false,
        state: row?.state ?? 'running',
        statusUrl: statusUrl(key),
        ...(row && resultOf(row) ? { result: resultOf(row) } : {}),
      });
    },
  );

  await app.register(
    operationRoutes({
      contract: conversionContract,
      path: '/conversions/:id',
      tag: 'conversions',
      read: {
        summary:
          'A conversion: state, per-target results (errors, latency), published Triton layout, registered artifacts',
        // The stored row outlives the workflow's retention; while it runs, the workflow adds the finer phase.
        answer: async (run) => {
          const r = await store.get(run.tenantId, run.key);
          if (!r) throw new NotFoundError(conversionContract.resource, run.key);
          const artifacts = (await store.artifactsOf(run.tenantId, r.modelId, r.version)).filter(
            (a) => a.conversionWorkflowId === r.workflowId,
          );
          const progress = r.state === 'running' ? await run.status().catch(() => undefined) : undefined;
          return { ...r, artifacts, ...(progress ? { progress } : {}) };
        },
        response: ConversionRead,
      },
      cancel: {
        summary:
          "Cancel a running conversion: its running steps' Jobs are deleted, nothing is published, and the memo key is given up",
      },
    }),
  );
};
