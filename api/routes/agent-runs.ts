import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ApplicationFailure } from '@temporalio/common';
import { WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import { TERMINAL_AGENT_PHASES, type AgentRunStatus, type ApprovalRequest } from '../../common/agents';
import { ConflictError, ForbiddenError, NotFoundError } from '../../common/errors';
import { workflowId } from '../../common/ids';
import { PhaseKey } from '../../common/search-attributes';
import { AgentStore } from '../../common/store/agents';
import type { agentRun } from '../../workflows';
import { requireRole } from '../plugins/auth';
import { idempotencyKeyOf, operationRun, startOperation } from '../operations';
import { errorResponses, IdempotencyHeaders, ResourceId } from '../schemas';

const StartRun = Type.Object({ agentId: ResourceId, input: Type.String({ minLength: 1, maxLength: 32_000 }) }, { additionalProperties: false });
const Accepted = Type.Object({ runId: Type.String(), workflowId: Type.String(), status: Type.String(), startedAt: Type.String(), statusUrl: Type.String() });
const IdParams = Type.Object({ id: Type.String({ maxLength: 128 }) });
const Answer = Type.Object(
  {
    actionHash: Type.String({ pattern: '^[0-9a-f]{64}$', description: 'the actionHash of the pending call, as GET shows it' }),
    decision: Type.Union([Type.Literal('approve'), Type.Literal('deny')]),
    reason: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  { additionalProperties: false },
);
/** How often the events stream asks the run for its transcript. */
const EVENTS_POLL_MS = 500;

/** Agent runs (workflows/agent-run.ts): start, read the transcript, answer approvals, cancel, follow as SSE. */
export const agentRunRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { db, temporal, taskQueue } = app.platform;
  const agents = new AgentStore(db);

  app.post(
    '/',
    {
      preHandler: requireRole('developer'),
      schema: { tags: ['agents'], summary: 'Start an agent run (a Temporal workflow)', headers: IdempotencyHeaders, body: StartRun, response: { 202: Accepted, ...errorResponses(400, 404, 422, 503) } },
    },
    async (request, reply) => {
      const tenantId = request.principal!.tenantId;
      const agent = await agents.getAgent(tenantId, request.body.agentId);
      if (!agent) throw new NotFoundError('agent', request.body.agentId);
      const key = idempotencyKeyOf(request.headers['idempotency-key']);
      const id = workflowId('agent-run', tenantId, key);
      await startOperation<typeof agentRun>(
        { db, temporal, taskQueue },
        {
          kind: 'agent-run',
          tenantId,
          key,
          request: request.body,
          workflow: 'agentRun',
          options: {
            args: [{ tenantId, runId: key, agent, input: request.body.input }],
            // The run moves Phase on from here; starting with it set lists a fresh run as running, not as unset.
            typedSearchAttributes: [{ key: PhaseKey, value: 'running' }],
            staticSummary: `Agent ${agent.id} on ${agent.model}`,
            // Each approval has its own deadline; this bounds a run whatever happens.
            workflowExecutionTimeout: '30 days',
          },
        },
      );
      request.auditWorkflowId = id;
      const desc = await temporal.workflow.getHandle(id).describe();
      return reply.status(202).send({ runId: key, workflowId: id, status: desc.status.name.toLowerCase(), startedAt: desc.startTime.toISOString(), statusUrl: `/v1/agent-runs/${key}` });
    },
  );

  const runOf = (tenantId: string, key: string) => operationRun<typeof agentRun>(temporal, 'agent-run', 'agentRun', tenantId, key, 'agent-run');

  app.get(
    '/:id',
    { preHandler: requireRole('viewer'), schema: { tags: ['agents'], summary: 'The run so far: phase, messages, tool calls, approvals, pending call', params: IdParams, response: errorResponses(400, 404) } },
    async (request) => {
      const { handle, desc } = await runOf(request.principal!.tenantId, request.params.id);
      return { workflowId: handle.workflowId, workflowStatus: desc.status.name, ...(await handle.query<AgentRunStatus>('transcript')) };
    },
  );

  app.post(
    '/:id/approvals',
    {
      // Any member may ask; the workflow's Update validator decides (role, tenant, action hash, repeat), so the rule lives in one place.
      preHandler: requireRole('viewer'),
      schema: { tags: ['agents'], summary: 'Approve or deny the pending tool call, naming its action hash', params: IdParams, body: Answer, response: errorResponses(400, 404, 409) },
    },
    async (request) => {
      const p = request.principal!;
      const { handle } = await runOf(p.tenantId, request.params.id);
      request.auditWorkflowId = handle.workflowId;
      const answer: ApprovalRequest = { by: p.subject, tenantId: p.tenantId, roles: p.roles, ...request.body };
      try {
        return await handle.executeUpdate<AgentRunStatus, [ApprovalRequest]>('approval', { args: [answer] });
      } catch (err) {
        if (err instanceof WorkflowUpdateFailedError) {
          const cause = err.cause;
          const message = cause instanceof Error ? cause.message : err.message;
          if (cause instanceof ApplicationFailure && cause.type === 'ApprovalForbidden') throw new ForbiddenError(message);
          throw new ConflictError(message, { field: 'body.actionHash' });
        }
        if (err instanceof WorkflowNotFoundError) throw new ConflictError(`agent run '${request.params.id}' has ended`);
        throw err;
      }
    },
  );

  app.post(
    '/:id/cancel',
    { preHandler: requireRole('developer'), schema: { tags: ['agents'], summary: 'Cancel the run: nothing more is called after it', params: IdParams, response: errorResponses(400, 404, 409) } },
    async (request, reply) => {
      const { handle, desc } = await runOf(request.principal!.tenantId, request.params.id);
      request.auditWorkflowId = handle.workflowId;
      if (desc.status.name !== 'RUNNING') throw new ConflictError(`agent run '${request.params.id}' is ${desc.status.name.toLowerCase()}`);
      await handle.cancel();
      return reply.status(202).send({ runId: request.params.id, workflowId: handle.workflowId, status: 'cancelling' });
    },
  );

  app.get(
    '/:id/events',
    {
      preHandler: requireRole('viewer'),
      schema: { tags: ['agents'], summary: 'Server-sent events: the run status each time it changes, until it ends', params: IdParams, response: errorResponses(400, 404) },
    },
    async (request, reply) => {
      const { handle } = await runOf(request.principal!.tenantId, request.params.id);
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-trace-id': request.id });
      let closed = false;
      request.raw.on('close', () => (closed = true));
      let last = '';
      try {
        while (!closed) {
          const status = await handle.query<AgentRunStatus>('transcript');
          const text = JSON.stringify(status);
          if (text !== last) reply.raw.write(`event: status\ndata: ${text}\n\n`);
          last = text;
          if (TERMINAL_AGENT_PHASES.includes(status.phase)) break;
          await new Promise((r) => setTimeout(r, EVENTS_POLL_MS));
        }
        reply.raw.write('event: end\ndata: {}\n\n');
      } catch (err) {
        reply.raw.write(`event: error\ndata: ${JSON.stringify({ message: (err as Error).message })}\n\n`);
      }
      reply.raw.end();
    },
  );
};
