import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { WorkflowNotFoundError } from '@temporalio/client';
import { BadRequestError, NotFoundError } from '../../common/errors';
import { BATCH_TIMES, BatchStore, ENDED, newObjectId, type BatchRecord } from '../../common/store/batches';
import {
  BATCH_ENDPOINTS,
  BATCH_STATUSES,
  batchContract,
  cancelBatchSignal,
  type BatchEndpoint,
  type BatchInput,
  type BatchStatus,
} from '../../contracts/batch';
import { parseWorkflowId, workflowId } from '../../contracts/operations';
import { PhaseKey } from '../../contracts/search-attributes';
import { linkTo } from '../openapi-links';
import { OpenAiList, openAiList } from '../openai-list';
import { idempotencyKeyOf, startOperation } from '../operations';
import { requireRole } from '../plugins/auth';
import { errorResponses, IdempotencyHeaders } from '../schemas';
import { FileParams } from './files';

const Endpoint = Type.Unsafe<BatchEndpoint>({ type: 'string', enum: [...BATCH_ENDPOINTS] });
const Counts = Type.Object({ total: Type.Integer(), completed: Type.Integer(), failed: Type.Integer() });
const Time = Type.Union([Type.Integer({ description: 'epoch seconds' }), Type.Null()]);
const Metadata = Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 512 }), {
  maxProperties: 16,
  description: 'up to 16 pairs; keys up to 64 characters, values up to 512',
});
/** OpenAI's batch object. */
const BatchObject = Type.Object({
  id: Type.String(),
  object: Type.Literal('batch'),
  endpoint: Endpoint,
  errors: Type.Union([
    Type.Object({
      object: Type.Literal('list'),
      data: Type.Array(
        Type.Object({
          code: Type.String(),
          message: Type.String(),
          param: Type.Union([Type.String(), Type.Null()]),
          line: Type.Union([Type.Integer(), Type.Null()]),
        }),
      ),
    }),
    Type.Null(),
  ]),
  input_file_id: Type.String(),
  completion_window: Type.Literal('24h'),
  status: Type.Unsafe<BatchStatus>({ type: 'string', enum: [...BATCH_STATUSES] }),
  output_file_id: Type.Union([Type.String(), Type.Null()]),
  error_file_id: Type.Union([Type.String(), Type.Null()]),
  ...(Object.fromEntries(BATCH_TIMES.map((t) => [t, Time])) as Record<(typeof BATCH_TIMES)[number], typeof Time>),
  request_counts: Counts,
  metadata: Type.Union([Metadata, Type.Null()]),
});
const toBatchObject = (b: BatchRecord) => ({
  id: b.id,
  object: 'batch' as const,
  endpoint: b.endpoint,
  errors: b.errors ? { object: 'list' as const, data: b.errors } : null,
  input_file_id: b.inputFileId,
  completion_window: '24h' as const,
  status: b.status,
  output_file_id: b.outputFileId,
  error_file_id: b.errorFileId,
  ...b.times,
  request_counts: b.requestCounts,
  metadata: b.metadata,
});

const BatchParams = Type.Object({ id: Type.String({ pattern: '^batch_[A-Za-z0-9_-]{1,120}$' }) });
const OBJECT_ID = { id: '$response.body#/id' };
const batchLinks = {
  batch: linkTo('GET /v1/batches/{id}', { parameters: OBJECT_ID }),
  cancel: linkTo('POST /v1/batches/{id}/cancel', { parameters: OBJECT_ID }),
};

/**
 * OpenAI's Batch API: create, read, list, cancel. A batch is the workflow `batch/<tenant>/<id>` (workflows/batch.ts);
 * its object is the batches row the workflow moves, with request_counts from the pages it finished.
 */
export const batchRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { db, temporal, taskQueue, storageScopes } = app.platform;
  const batches = new BatchStore(db);

  const batchOf = async (tenantId: string, id: string) => {
    const b = await batches.getBatch(tenantId, id);
    if (!b) throw new NotFoundError('batch', id);
    return b;
  };

  app.post(
    '/',
    {
      preHandler: requireRole('developer'),
      links: { 200: batchLinks },
      schema: {
        tags: ['batches'],
        summary: 'Create a batch of an uploaded input file; its lines go through the gateway as the caller',
        headers: IdempotencyHeaders,
        body: Type.Object(
          {
            input_file_id: FileParams.properties.id,
            endpoint: Endpoint,
            completion_window: Type.Literal('24h'),
            metadata: Type.Optional(Type.Union([Metadata, Type.Null()])),
          },
          { additionalProperties: false },
        ),
        response: { 200: BatchObject, ...errorResponses(400, 404, 422, 503) },
      },
    },
    async (request) => {
      const principal = request.principal!;
      const tenantId = principal.tenantId;
      const body = request.body;
      const file = await batches.getFile(tenantId, body.input_file_id);
      if (!file) throw new NotFoundError('file', body.input_file_id);
      if (file.purpose !== 'batch')
        throw new BadRequestError(
          `file '${file.id}' is a ${file.purpose} file, not a batch input`,
          'body.input_file_id',
        );
      const other = file.urls.find((u) => u !== body.endpoint);
      if (other)
        throw new BadRequestError(
          `the file's lines call ${other}, not the batch's endpoint ${body.endpoint}`,
          'body.endpoint',
        );
      const fresh = newObjectId('batch_');
      const header = request.headers['idempotency-key'];
      const expiresAt = Date.now() + app.platform.batchCompletionWindowMs;
      const inputOf = (batchId: string): BatchInput => ({
        tenantId,
        batchId,
        bucket: storageScopes.bucketOf(tenantId),
        endpoint: body.endpoint as BatchEndpoint,
        inputFileId: file.id,
        subject: principal.subject,
        roles: principal.roles,
        expiresAt,
        pages: file.pageOffsets.length,
        total: file.lineCount,
      });
      const started = await startOperation(
        { db, temporal, taskQueue },
        {
          contract: batchContract,
          tenantId,
          // Without the header the batch's own id is the claim, as unique as any key.
          key: header === undefined ? fresh : idempotencyKeyOf(header),
          workflowKey: fresh,
          request: body,
          // A repeated key names the first request's batch; the workflow must be that batch's.
          options: (id) => ({
            args: [inputOf(parseWorkflowId(id)!.key)],
            typedSearchAttributes: [{ key: PhaseKey, value: 'validating' }],
          }),
          prepare: () =>
            batches.createBatch(tenantId, {
              id: fresh,
              endpoint: body.endpoint as BatchEndpoint,
              inputFileId: file.id,
              completionWindow: body.completion_window,
              metadata: body.metadata ?? null,
              createdBy: principal.subject,
              total: file.lineCount,
              expiresAt,
            }),
        },
      );
      request.auditWorkflowId = started.workflowId;
      return toBatchObject(await batchOf(tenantId, parseWorkflowId(started.workflowId)!.key));
    },
  );

  app.get(
    '/',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['batches'],
        summary: "The tenant's batches, newest first (OpenAI's list: after, limit)",
        querystring: Type.Object({
          after: Type.Optional(BatchParams.properties.id),
          limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }),
        }),
        response: {
          200: OpenAiList(BatchObject),
          ...errorResponses(400),
        },
      },
    },
    async (request) => {
      const page = await batches.listBatches(request.principal!.tenantId, request.query);
      return openAiList(page.items.map(toBatchObject), page.hasMore);
    },
  );

  app.get(
    '/:id',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['batches'],
        summary: 'A batch, with its request_counts so far',
        params: BatchParams,
        response: { 200: BatchObject, ...errorResponses(400, 404) },
      },
    },
    async (request) => toBatchObject(await batchOf(request.principal!.tenantId, request.params.id)),
  );

  app.post(
    '/:id/cancel',
    {
      preHandler: requireRole('developer'),
      links: { 200: { batch: linkTo('GET /v1/batches/{id}', { parameters: OBJECT_ID }) } },
      schema: {
        tags: ['batches'],
        summary: 'Cancel a batch: cancelling until the lines in flight stop, then cancelled with the partial output',
        params: BatchParams,
        response: { 200: BatchObject, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const { id } = request.params;
      const b = await batchOf(tenantId, id);
      // An ended batch stays as it ended (OpenAI answers the object as it is).
      if (!ENDED.includes(b.status) && b.status !== 'finalizing') {
        await batches.moveBatch(tenantId, id, 'cancelling');
        try {
          await temporal.workflow.getHandle(workflowId('batch', tenantId, id)).signal(cancelBatchSignal);
        } catch (err) {
          if (!(err instanceof WorkflowNotFoundError)) throw err;
        }
      }
      return toBatchObject(await batchOf(tenantId, id));
    },
  );
};
