import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { BadRequestError, ConflictError, NotFoundError, PlatformError } from '../../common/errors';
import { isNotFound } from '../../common/objectstore';
import { BatchStore, newObjectId, type BatchFile } from '../../common/store/batches';
import { fileKey } from '../../contracts/batch';
import { MAX_FILE_BYTES } from '../batch-input';
import { receiveBatchFile } from '../batch-upload';
import { encodedBodyError } from '../content-encoding';
import { linkTo } from '../openapi-links';
import { OpenAiList, openAiList } from '../openai-list';
import { requireRole } from '../plugins/auth';
import { errorResponses } from '../schemas';

/** OpenAI's file object. */
export const FileObject = Type.Object({
  id: Type.String(),
  object: Type.Literal('file'),
  bytes: Type.Integer(),
  created_at: Type.Integer({ description: 'epoch seconds' }),
  filename: Type.String(),
  purpose: Type.Union([Type.Literal('batch'), Type.Literal('batch_output')]),
  status: Type.Literal('processed'),
  status_details: Type.Null(),
});
const toFileObject = (f: BatchFile) => ({
  id: f.id,
  object: 'file' as const,
  bytes: f.bytes,
  created_at: f.createdAt,
  filename: f.filename,
  purpose: f.purpose,
  status: 'processed' as const,
  status_details: null,
});

export const FileParams = Type.Object({ id: Type.String({ pattern: '^file-[A-Za-z0-9_-]{1,120}$' }) });
const OBJECT_ID = { id: '$response.body#/id' };
const fileLinks = {
  file: linkTo('GET /v1/files/{id}', { parameters: OBJECT_ID }),
  content: linkTo('GET /v1/files/{id}/content', { parameters: OBJECT_ID }),
  delete: linkTo('DELETE /v1/files/{id}', { parameters: OBJECT_ID }),
};
/**
 * OpenAI's Files API for batches: `POST /v1/files` (multipart, purpose `batch`), list, read, content, delete. Content
 * is in the tenant's own bucket; input lines are checked at upload (api/batch-input.ts).
 */
export const fileRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { db, objects, storageScopes, batchLineLimitBytes } = app.platform;
  const files = new BatchStore(db);

  // The form is read by the route's handler, as it arrives (api/batch-upload.ts), after authentication and the role
  // check: nothing here holds it.
  app.addContentTypeParser('multipart/form-data', (request, _payload, done) =>
    done(encodedBodyError(request.headers) ?? null, undefined),
  );

  const fileOf = async (tenantId: string, id: string) => {
    const f = await files.getFile(tenantId, id);
    if (!f) throw new NotFoundError('file', id);
    return f;
  };

  app.post(
    '/',
    {
      preHandler: requireRole('developer'),
      // The schema documents the form; the handler checks each of its parts as it reads them.
      validatorCompiler: () => () => true,
      links: { 200: fileLinks },
      schema: {
        tags: ['batches'],
        summary: 'Upload a batch input file (OpenAI Files API; JSONL, every line checked)',
        body: {
          content: {
            'multipart/form-data': {
              schema: Type.Object({
                file: Type.String({
                  contentMediaType: 'application/jsonl',
                  description: `JSONL, at most ${MAX_FILE_BYTES} bytes and 50000 lines: {custom_id, method: "POST", url, body}`,
                }),
                purpose: Type.Literal('batch'),
              }),
            },
          },
        },
        response: { 200: FileObject, ...errorResponses(400, 413) },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      if (!request.headers['content-type']?.toLowerCase().startsWith('multipart/form-data'))
        throw new BadRequestError('a multipart/form-data body with a file part is required', 'body.file');
      const id = newObjectId('file-');
      const ref = { bucket: storageScopes.bucketOf(tenantId), key: fileKey(id) };
      const upload = await receiveBatchFile(request.raw, {
        maxLineBytes: batchLineLimitBytes,
        store: (body) => objects.putStream(ref, body, 'application/jsonl'),
      }).catch(async (err: unknown) => {
        // Only a file stored before its form failed (a wrong purpose after it) is there; any other was never stored.
        await objects.delete(ref).catch(() => undefined);
        throw err;
      });
      const f = {
        id,
        purpose: 'batch' as const,
        filename: upload.filename.slice(0, 255) || 'upload.jsonl',
        bytes: upload.bytes,
        ...upload.checked,
        objectKey: fileKey(id),
      };
      await files.putFile(tenantId, f);
      return toFileObject({ ...f, createdAt: Math.floor(Date.now() / 1000) });
    },
  );

  app.get(
    '/',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['batches'],
        summary: "The tenant's files, newest first unless order is asc (OpenAI's list: after, limit, order, purpose)",
        querystring: Type.Object({
          after: Type.Optional(FileParams.properties.id),
          limit: Type.Integer({ minimum: 1, maximum: 10_000, default: 100 }),
          order: Type.Union([Type.Literal('asc'), Type.Literal('desc')], { default: 'desc' }),
          purpose: Type.Optional(Type.Union([Type.Literal('batch'), Type.Literal('batch_output')])),
        }),
        response: {
          200: OpenAiList(FileObject),
          ...errorResponses(400),
        },
      },
    },
    async (request) => {
      const page = await files.listFiles(request.principal!.tenantId, request.query);
      return openAiList(page.items.map(toFileObject), page.hasMore);
    },
  );

  app.get(
    '/:id',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['batches'],
        summary: 'A file',
        params: FileParams,
        response: { 200: FileObject, ...errorResponses(400, 404) },
      },
    },
    async (request) => toFileObject(await fileOf(request.principal!.tenantId, request.params.id)),
  );

  app.get(
    '/:id/content',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['batches'],
        summary: "A file's content (JSONL)",
        params: FileParams,
        response: {
          200: {
            description: 'The file as stored',
            content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } },
          },
          ...errorResponses(400, 404),
        },
      },
    },
    async (request, reply) => {
      const tenantId = request.principal!.tenantId;
      const f = await fileOf(tenantId, request.params.id);
      const ref = { bucket: storageScopes.bucketOf(tenantId), key: f.objectKey };
      // The tenant's own S3 keys can remove or rewrite the object: it is answered as it is now, 404 once it is gone.
      const gone = () =>
        new PlatformError(404, 'not_found', `file '${f.id}' has no content: it was removed from the tenant's bucket`, {
          file: f.id,
        });
      const head = await objects.head(ref);
      if (!head) throw gone();
      const stream = await objects.getStream(ref).catch((err: unknown) => {
        throw isNotFound(err) ? gone() : err;
      });
      // Streamed from the store as it is read; the typed reply knows only the schema's string.
      return reply
        .type('application/octet-stream')
        .header('content-length', String(head.sizeBytes))
        .send(stream as unknown as string);
    },
  );

  app.delete(
    '/:id',
    {
      preHandler: requireRole('developer'),
      schema: {
        tags: ['batches'],
        summary: 'Delete a file (refused while a batch that has not ended reads it)',
        params: FileParams,
        response: {
          200: Type.Object({ id: Type.String(), object: Type.Literal('file'), deleted: Type.Literal(true) }),
          ...errorResponses(400, 404, 409),
        },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const { id } = request.params;
      await fileOf(tenantId, id);
      if (await files.fileInUse(tenantId, id)) throw new ConflictError(`file '${id}' is the input of a running batch`);
      const f = await files.deleteFile(tenantId, id);
      if (!f) throw new NotFoundError('file', id);
      await objects.delete({ bucket: storageScopes.bucketOf(tenantId), key: f.objectKey });
      return { id, object: 'file' as const, deleted: true as const };
    },
  );
};
