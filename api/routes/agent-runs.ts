import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { agentRunContract, TERMINAL_AGENT_PHASES } from '../../contracts/agent-run';
import { workflowId } from '../../contracts/operations';
import { PhaseKey } from '../../contracts/search-attributes';
import { NotFoundError } from '../../common/errors';
import { AgentStore } from '../../common/store/agents';
import type { agentRun } from '../../workflows';
import { requireRole } from '../plugins/auth';
import { acceptedSchema, IdParams, operationRoutes, OPERATION_ROLES, sendAccepted } from '../operation-routes';
import { idempotencyKeyOf, operationRun, startOperation } from '../operations';
import { errorResponses, IdempotencyHeaders, ResourceId } from '../schemas';

const StartRun = Type.Object({ agentId: ResourceId, input: Type.String({ minLength: 1, maxLength: 32_000 }) }, { additionalProperties: false });
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
      schema: { tags: ['agents'], summary: 'Start an agent run (a Temporal workflow)', headers: IdempotencyHeaders, body: StartRun, response: { 202: acceptedSchema(agentRunContract), ...errorResponses(400, 404, 422, 503) } },
    },
    async (request, reply) => {
      const tenantId = request.principal!.tenantId;
      const agent = await agents.getAgent(tenantId, request.body.agentId);
      if (!agent) throw new NotFoundError('agent', request.body.agentId);
      const key = idempotencyKeyOf(request.headers['idempotency-key']);
      const id = workflowId(agentRunContract.kind, tenantId, key);
      await startOperation<typeof agentRun>(
        { db, temporal, taskQueue },
        {
          contract: agentRunContract,
          tenantId,
          key,
          request: request.body,
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
      return sendAccepted(temporal, reply, agentRunContract, key, id, `/v1/agent-runs/${key}`);
    },
  );

  await app.register(
    operationRoutes({
      contract: agentRunContract,
      path: '/:id',
      tag: 'agents',
      read: { summary: 'The run so far: phase, messages, tool calls, approvals, pending call' },
      cancel: { summary: 'Cancel the run: nothing more is called after it' },
      approvals: {
        summary: 'Approve or deny the pending tool call, naming its action hash',
        body: Answer,
        conflictField: 'body.actionHash',
      },
    }),
  );

  app.get(
    '/:id/events',
    {
      preHandler: requireRole(OPERATION_ROLES.read),
      schema: { tags: ['agents'], summary: 'Server-sent events: the run status each time it changes, until it ends', params: IdParams, response: errorResponses(400, 404) },
    },
    async (request, reply) => {
      const { handle } = await operationRun(temporal, agentRunContract, request.principal!.tenantId, request.params.id);
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-trace-id': request.id });
      let closed = false;
      request.raw.on('close', () => (closed = true));
      let last = '';
      try {
        while (!closed) {
          const status = await handle.query(agentRunContract.statusQuery);
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
