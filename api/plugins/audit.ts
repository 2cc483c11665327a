import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Logger } from '../../common/logger';
import type { AuditEntry, AuditStore } from '../../common/store/audit';
import { AuditBuffer } from './audit-buffer';
import { AuditWriter } from './audit-writer';
import { isPublic, PLATFORM_ADMIN } from './auth';
import { ALWAYS_HEADERS } from '../response-headers';

/** What a reply the route wrote itself (`reply.hijack()`) tells its row when it ends. */
export type ReplyEnd = Pick<
  AuditEntry,
  | 'statusCode'
  | 'bytesSent'
  | 'disconnected'
  | 'model'
  | 'modelVersion'
  | 'promptTokens'
  | 'completionTokens'
  | 'errorClass'
>;

declare module 'fastify' {
  interface FastifyInstance {
    /** Rows of replies that end outside Fastify's send: hijacked streams and the gateway's answers. */
    auditEnded(request: FastifyRequest, reply: FastifyReply, end: ReplyEnd): void;
  }
  interface FastifyRequest {
    /** The workflow a call started or steered, for its audit row. */
    auditWorkflowId?: string;
    /** The model (and version, once chosen) an inference call named, for a row written through Fastify's send. */
    auditModel?: Pick<AuditEntry, 'model' | 'modelVersion'>;
  }
  interface FastifyContextConfig {
    /** Rows of this route are batched with the gateway's (inference), not written before the answer leaves. */
    auditBuffered?: boolean;
  }
}

const sizeOf = (payload: unknown): number | undefined =>
  typeof payload === 'string'
    ? Buffer.byteLength(payload)
    : Buffer.isBuffer(payload)
      ? payload.length
      : payload == null
        ? 0
        : undefined;

const rowOf = (request: FastifyRequest, reply: FastifyReply): AuditEntry => {
  const durationMs = reply.elapsedTime;
  return {
    requestId: request.id,
    at: Date.now() - durationMs,
    durationMs,
    tenantId: request.principal?.tenantId,
    principal: request.principal?.subject ?? request.operator?.subject,
    role: request.operator ? PLATFORM_ADMIN : request.principal?.roles.join(','),
    method: request.method,
    route: request.routeOptions.url ?? request.url.split('?')[0]!,
    url: request.url,
    statusCode: reply.statusCode,
    workflowId: request.auditWorkflowId,
    ip: request.ip,
  };
};

/**
 * One audit row per non-public call. Control routes write theirs before the response leaves, so a client that got
 * an answer can rely on the row existing (concurrent calls' rows share an INSERT: AuditWriter). Inference calls and
 * streams (hijacked replies) get theirs when the reply ends (status, bytes, duration, whether the client went away;
 * model, version and tokens for inference), buffered per replica and written in batches, so the gateway makes no
 * database round trip per call. Calls refused for
 * missing or invalid credentials are counted per source address and minute instead of a row each.
 */
export const auditPlugin = fp(
  async (app: FastifyInstance, opts: { audit: AuditStore; flushMs: number; logger: Logger }) => {
    const buffer = new AuditBuffer({ store: opts.audit, flushMs: opts.flushMs, logger: opts.logger });
    const writer = new AuditWriter(opts.audit);
    app.addHook('onClose', () => buffer.close());
    app.decorateRequest('auditWorkflowId', undefined);
    app.decorateRequest('auditModel', undefined);
    app.decorate('auditEnded', (request: FastifyRequest, reply: FastifyReply, end: ReplyEnd) =>
      buffer.add({ ...rowOf(request, reply), ...end }),
    );
    app.addHook('onSend', async (request, reply, payload) => {
      if (isPublic(request)) return payload;
      if (reply.statusCode === 401 && !request.principal && !request.operator) {
        buffer.unauthenticated(request.ip);
        return payload;
      }
      const row = { ...rowOf(request, reply), bytesSent: sizeOf(payload), ...request.auditModel };
      if (request.routeOptions.config?.auditBuffered) {
        buffer.add(row);
        return payload;
      }
      try {
        await writer.write(row);
      } catch (err) {
        // The response is already decided; failing it now would hide what happened from the caller too.
        request.log.error({ err, audit: true }, 'audit write failed');
      }
      return payload;
    });
  },
  { name: 'audit' },
);

/**
 * Takes over the reply to write it as a stream (`reply.hijack()`); its audit row, with the bytes written and
 * whether the client left before the end, is buffered when the connection closes.
 */
export function auditedStream(
  app: FastifyInstance,
  request: FastifyRequest,
  reply: FastifyReply,
  contentType: string,
): { write(chunk: string | Buffer): boolean; end(): void } {
  reply.hijack();
  const out = reply.raw;
  out.writeHead(200, {
    ...ALWAYS_HEADERS,
    'content-type': contentType,
    'cache-control': 'no-cache',
    'x-trace-id': request.id,
  });
  let bytesSent = 0;
  let recorded = false;
  // 'finish' too: an injected reply (an in-process call) may never emit 'close'.
  const ended = () => {
    if (recorded) return;
    recorded = true;
    app.auditEnded(request, reply, { statusCode: 200, bytesSent, disconnected: !out.writableFinished });
  };
  out.once('finish', ended);
  out.once('close', ended);
  return {
    write(chunk) {
      bytesSent += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
      return out.write(chunk);
    },
    end: () => out.end(),
  };
}
