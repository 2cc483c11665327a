import { BucketName } from '../resource-schemas';
import { NAMESPACE_KEYS, DOCUMENT_KEYS } from '../../common/store/knowledge';
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { FORMAT_BY_EXTENSION, uploadsPrefix } from '../../common/documents';
import { BadRequestError, ConflictError, NotFoundError } from '../../common/errors';
import { anyCase } from '../../common/workload-policy';
import { objectUri } from '../../common/objectstore';
import { checkUriInScope } from '../../common/store/storage-scope';
import type { ingestDocuments } from '../../workflows';
import { ingestionContract, type IngestionInput } from '../../contracts/ingestion';
import { requireRole } from '../plugins/auth';
import { encodedBodyError } from '../content-encoding';
import { operationRoutes, type Links } from '../operation-routes';
import { IngestionRead } from '../operation-schemas';
import { linkTo } from '../openapi-links';
import { idempotencyKeyOf, startOperation } from '../operations';
import { storeBody } from '../streamed-body';
import { errorResponses, IdempotencyHeaders, NextCursor, pageQuerystring, ResourceId } from '../schemas';

const NamespaceParams = Type.Object({ namespace: ResourceId });
const UPLOAD_LIMIT_BYTES = 50 * 1024 * 1024;

const Source = Type.Union([
  Type.Object(
    {
      type: Type.Literal('s3'),
      bucket: BucketName,
      prefix: Type.String({ maxLength: 1024 }),
    },
    { additionalProperties: false },
  ),
  Type.Object({ type: Type.Literal('uploads') }, { additionalProperties: false }),
]);
const createIngestion = (embedderPattern: string) =>
  Type.Object(
    {
      source: Source,
      parser: Type.Union([Type.Literal('builtin'), Type.Literal('unstructured')], {
        default: 'builtin',
        description: 'unstructured: only where the platform sets UNSTRUCTURED_API_URL (else 400)',
      }),
      chunking: Type.Object(
        {
          strategy: Type.Union([Type.Literal('heading'), Type.Literal('paragraph'), Type.Literal('fixed')], {
            default: 'heading',
          }),
          size: Type.Integer({ minimum: 100, maximum: 8000, default: 1000 }),
          overlap: Type.Integer({ minimum: 0, maximum: 2000, default: 150 }),
        },
        { additionalProperties: false, default: {} },
      ),
      embedder: Type.String({
        default: 'default',
        pattern: embedderPattern,
        description: "the deployment's embedders: default (a local model) and/or openai:<model>",
      }),
      batchSize: Type.Integer({ minimum: 1, maximum: 500, default: 25 }),
      parallelism: Type.Integer({ minimum: 1, maximum: 8, default: 2 }),
    },
    { additionalProperties: false },
  );
const Namespace = Type.Object({
  name: Type.String(),
  embedderId: Type.String(),
  collection: Type.String(),
  createdAt: Type.String(),
  documents: Type.Integer({ description: 'Documents recorded in the namespace' }),
});
const Document = Type.Object({
  documentId: Type.String(),
  sourceUri: Type.String(),
  contentHash: Type.Union([Type.String(), Type.Null()]),
  chunkCount: Type.Integer(),
  state: Type.Union([Type.Literal('indexed'), Type.Literal('failed')]),
  error: Type.Union([Type.String(), Type.Null()]),
});
export const Hit = Type.Object({
  score: Type.Number(),
  documentId: Type.String(),
  chunkIndex: Type.Integer(),
  text: Type.String(),
  source: Type.Object({
    uri: Type.String(),
    page: Type.Union([Type.Integer(), Type.Null()]),
    heading: Type.Union([Type.String(), Type.Null()]),
    start: Type.Integer(),
    end: Type.Integer(),
  }),
});
const Search = Type.Object(
  {
    query: Type.String({ minLength: 1, maxLength: 4000 }),
    topK: Type.Integer({ minimum: 1, maximum: 100, default: 5 }),
    filter: Type.Optional(
      Type.Object({ documentIds: Type.Array(Type.String(), { maxItems: 1000 }) }, { additionalProperties: false }),
    ),
  },
  { additionalProperties: false },
);

const inNamespace = { namespace: '$request.path.namespace' };
/** From a started ingestion to its progress and to what it fills: the namespace's documents, search and chat. */
const ingestionLinks: Links = {
  status: linkTo('GET /v1/knowledge/{namespace}/ingestions/{id}', {
    parameters: { ...inNamespace, id: '$response.body#/ingestionId' },
  }),
  documents: linkTo('GET /v1/knowledge/{namespace}/documents', { parameters: inNamespace }),
  search: linkTo('POST /v1/knowledge/{namespace}/search', { parameters: inNamespace }),
  chat: linkTo('POST /v1/knowledge/{namespace}/chat', { parameters: inNamespace }),
  delete: linkTo('DELETE /v1/knowledge/{namespace}', { parameters: inNamespace }),
};
/** From the first listed namespace to what it holds. */
const firstNamespace = { namespace: '$response.body#/namespaces/0/name' };
const namespaceLinks: Links = {
  documents: linkTo('GET /v1/knowledge/{namespace}/documents', { parameters: firstNamespace }),
  search: linkTo('POST /v1/knowledge/{namespace}/search', { parameters: firstNamespace }),
};
/** From an upload to the ingestion of the namespace's uploads. */
const uploadLinks: Links = {
  ingest: linkTo('POST /v1/knowledge/{namespace}/ingestions', {
    parameters: inNamespace,
    requestBody: { source: { type: 'uploads' } },
  }),
};

export const knowledgeRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { knowledge, vectors, embedders, unstructuredParser, objects, db, temporal, taskQueue, storageScopes } =
    app.platform;
  const namespaceOf = async (tenantId: string, name: string) => {
    const ns = await knowledge.getNamespace(tenantId, name);
    if (!ns) throw new NotFoundError('namespace', name);
    return ns;
  };

  app.get(
    '/',
    {
      preHandler: requireRole('viewer'),
      links: { 200: namespaceLinks },
      schema: {
        tags: ['knowledge'],
        summary: "The tenant's knowledge namespaces by name",
        querystring: pageQuerystring(NAMESPACE_KEYS),
        response: {
          200: Type.Object({ namespaces: Type.Array(Namespace), nextCursor: NextCursor }),
          ...errorResponses(400),
        },
      },
    },
    async (request) => {
      const page = await knowledge.listNamespaces(request.principal!.tenantId, request.query);
      return { namespaces: page.items, nextCursor: page.nextCursor };
    },
  );

  app.delete(
    '/:namespace',
    {
      preHandler: requireRole('operator'),
      schema: {
        tags: ['knowledge'],
        summary: 'Delete a namespace, its points and its uploads',
        params: NamespaceParams,
        response: { 204: Type.Null({ description: 'Deleted' }), ...errorResponses(400, 404) },
      },
    },
    async (request, reply) => {
      const tenantId = request.principal!.tenantId;
      const ns = await namespaceOf(tenantId, request.params.namespace);
      await vectors.deleteNamespace(ns.collection, { tenantId, namespace: ns.name });
      const bucket = storageScopes.bucketOf(tenantId);
      for (const o of await objects.list(bucket, uploadsPrefix(tenantId, ns.name)))
        await objects.delete({ bucket, key: o.key });
      await knowledge.deleteNamespace(tenantId, ns.name);
      return reply.status(204).send(null);
    },
  );

  // A document is read by its route's handler as it arrives (api/streamed-body.ts), whatever its content type: its
  // route has a context of its own with no parser (the app's JSON and text parsers took such uploads before they
  // reached it, which then answered 400).
  await app.register((async (uploads) => {
    uploads.removeAllContentTypeParsers();
    uploads.addContentTypeParser('*', (request, _payload, done) =>
      done(encodedBodyError(request.headers) ?? null, undefined),
    );
    uploads.post(
      '/:namespace/files',
      {
        preHandler: requireRole('developer'),
        links: { 201: uploadLinks },
        schema: {
          tags: ['knowledge'],
          summary: 'Upload a document (raw body) to be ingested with source {"type":"uploads"}',
          params: NamespaceParams,
          querystring: Type.Object({
            name: Type.String({
              pattern: `^[A-Za-z0-9][A-Za-z0-9._ -]{0,200}\\.(?:${Object.keys(FORMAT_BY_EXTENSION).map(anyCase).join('|')})$`,
              description: 'the file name, with the extension of a supported type (pdf, docx, html, md, txt)',
            }),
          }),
          // Any content type: the bytes are stored as sent and parsed by the name's extension at ingestion.
          body: {
            content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary', minLength: 1 } } },
          },
          response: {
            201: Type.Object({ documentId: Type.String(), uri: Type.String(), sizeBytes: Type.Integer() }),
            ...errorResponses(400, 413),
          },
        },
      },
      async (request, reply) => {
        const tenantId = request.principal!.tenantId;
        const ref = {
          bucket: storageScopes.bucketOf(tenantId),
          key: `${uploadsPrefix(tenantId, request.params.namespace)}${request.query.name}`,
        };
        const sizeBytes = await storeBody(request.raw, UPLOAD_LIMIT_BYTES, (body) => objects.putStream(ref, body));
        return reply.status(201).send({ documentId: request.query.name, uri: objectUri(ref), sizeBytes });
      },
    );
  }) satisfies FastifyPluginAsyncTypebox);

  app.get(
    '/:namespace/documents',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['knowledge'],
        summary: 'Documents of a namespace and their index state, by document id',
        params: NamespaceParams,
        querystring: pageQuerystring(DOCUMENT_KEYS),
        response: {
          200: Type.Object({ documents: Type.Array(Document), nextCursor: NextCursor }),
          ...errorResponses(400, 404),
        },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const ns = await namespaceOf(tenantId, request.params.namespace);
      const page = await knowledge.listDocuments(tenantId, ns.name, request.query);
      return { documents: page.items, nextCursor: page.nextCursor };
    },
  );

  app.post(
    '/:namespace/ingestions',
    {
      preHandler: requireRole('developer'),
      links: { 202: ingestionLinks },
      schema: {
        tags: ['knowledge'],
        summary: 'Ingest a source into the namespace (a Temporal workflow)',
        params: NamespaceParams,
        headers: IdempotencyHeaders,
        body: createIngestion(embedders.pattern()),
        response: {
          202: Type.Object({ workflowId: Type.String(), ingestionId: Type.String(), statusUrl: Type.String() }),
          ...errorResponses(400, 409, 422, 503),
        },
      },
    },
    async (request, reply) => {
      const tenantId = request.principal!.tenantId;
      const { namespace } = request.params;
      const body = request.body;
      // Refused here, not by the worker's first batch, which would fail the run after a 202.
      if (body.parser === 'unstructured' && !unstructuredParser)
        throw new BadRequestError(
          'parser "unstructured" is not available: this platform has no UNSTRUCTURED_API_URL',
          'body.parser',
        );
      if (body.source.type === 's3')
        await checkUriInScope(
          storageScopes,
          tenantId,
          objectUri({ bucket: body.source.bucket, key: body.source.prefix || '_' }),
          'body.source.bucket',
        );
      const existing = await knowledge.getNamespace(tenantId, namespace);
      // The namespace's points are in another embedder's space: a conflict with what is stored, not a bad request.
      if (existing && existing.embedderId !== body.embedder) {
        throw new ConflictError(`namespace '${namespace}' is indexed with embedder '${existing.embedderId}'`, {
          field: 'body.embedder',
        });
      }
      const key = idempotencyKeyOf(request.headers['idempotency-key']);
      const input: IngestionInput = {
        tenantId,
        namespace,
        ingestionId: key,
        ...body,
        // Each chunk must advance: an overlap of the whole size or more is the most there can be, one less than the
        // size (JSON Schema cannot relate two fields, and a schema-valid body is never refused).
        chunking: {
          ...body.chunking,
          overlap: Math.min(body.chunking.overlap, body.chunking.size - 1),
        } as IngestionInput['chunking'],
      };
      const { workflowId: id } = await startOperation<typeof ingestDocuments>(
        { db, temporal, taskQueue },
        {
          contract: ingestionContract,
          tenantId,
          key,
          request: { namespace, ...body },
          options: {
            args: [input],
            staticSummary: `Ingest ${body.source.type === 's3' ? `s3://${body.source.bucket}/${body.source.prefix}` : 'uploads'} into knowledge namespace ${namespace}`,
            workflowExecutionTimeout: '24 hours',
          },
        },
      );
      request.auditWorkflowId = id;
      return reply
        .status(202)
        .send({ workflowId: id, ingestionId: key, statusUrl: `/v1/knowledge/${namespace}/ingestions/${key}` });
    },
  );

  await app.register(
    operationRoutes({
      contract: ingestionContract,
      path: '/:namespace/ingestions/:id',
      params: Type.Object({ namespace: ResourceId, id: Type.String({ maxLength: 128 }) }),
      tag: 'knowledge',
      read: {
        summary: 'Progress of an ingestion',
        // A run that has not answered its first query yet (or whose worker is away) still shows its Temporal status.
        answer: async (run) => ({
          workflowId: run.handle.workflowId,
          status: run.workflowStatus,
          ...((await run.status().catch(() => undefined)) ?? {}),
        }),
        response: IngestionRead,
      },
    }),
  );

  app.post(
    '/:namespace/search',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['knowledge'],
        summary: 'Semantic search within the namespace (always scoped to the caller’s tenant)',
        params: NamespaceParams,
        body: Search,
        response: { 200: Type.Object({ hits: Type.Array(Hit) }), ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const ns = await namespaceOf(tenantId, request.params.namespace);
      const embedder = await embedders.get(ns.embedderId);
      const [vector] = await embedder.embed([request.body.query]);
      const hits = await vectors.search(
        ns.collection,
        { tenantId, namespace: ns.name },
        vector!,
        request.body.topK ?? 5,
        request.body.filter?.documentIds,
      );
      return {
        hits: hits.map((h) => ({
          score: h.score,
          documentId: h.payload.documentId,
          chunkIndex: h.payload.chunkIndex,
          text: h.payload.text,
          source: h.payload.source,
        })),
      };
    },
  );
};
