import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { AuditStore } from '../../common/store/audit';
import { isPublic, PLATFORM_ADMIN } from './auth';

declare module 'fastify' {
  interface FastifyRequest {
    /** The workflow a call started or steered, for its audit row. */
    auditWorkflowId?: string;
  }
}

/**
 * Writes an audit row for every non-public call, including rejected ones, before the response leaves:
 * a client that got an answer can rely on the row existing.
 */
export const auditPlugin = fp(
  async (app: FastifyInstance, opts: { audit: AuditStore }) => {
    app.decorateRequest('auditWorkflowId', undefined);
    app.addHook('onSend', async (request, reply, payload) => {
      if (isPublic(request)) return payload;
      try {
        await opts.audit.record({
          requestId: request.id,
          tenantId: request.principal?.tenantId,
          principal: request.principal?.subject ?? request.operator?.subject,
          role: request.operator ? PLATFORM_ADMIN : request.principal?.roles.join(','),
          method: request.method,
          route: request.routeOptions.url ?? request.url.split('?')[0]!,
          url: request.url,
          statusCode: reply.statusCode,
          workflowId: request.auditWorkflowId,
          ip: request.ip,
        });
      } catch (err) {
        // The response is already decided; failing it now would hide what happened from the caller too.
        request.log.error({ err, audit: true }, 'audit write failed');
      }
      return payload;
    });
  },
  { name: 'audit' },
);
