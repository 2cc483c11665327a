import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { agentRunContract, TERMINAL_AGENT_PHASES } from '../../contracts/agent-run';
import { PhaseKey } from '../../contracts/search-attributes';
import { NotFoundError } from '../../common/errors';
import { AgentStore } from '../../common/store/agents';
import { auditedStream } from '../plugins/audit';
import { requireRole } from '../plugins/auth';
import { IdParams, operationRoutes, OPERATION_ROLES } from '../operation-routes';
import { operationRun } from '../operations';
import { AgentRunEvent, AgentRunRead, AgentRunStatusSchema } from '../operation-schemas';
import { linkTo } from '../openapi-links';
import { errorResponses, ResourceId } from '../schemas';

const StartRun = Type.Object(
  { agentId: ResourceId, input: Type.String({ minLength: 1, maxLength: 32_000 }) },
  { additionalProperties: false },
);
const Answer = Type.Object(
  {
    actionHash: Type.String({
      pattern: '^[0-9a-f]{64}$',
      description: 'the actionHash of the pending call, as GET shows it',
    }),
    decision: Type.Union([Type.Literal('approve'), Type.Literal('deny')]),
    reason: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  { additionalProperties: false },
);
/** How often the events stream asks the run for its transcript. */
const EVENTS_POLL_MS = 500;

const byRunId = { parameters: { id: '$response.body#/runId' } };

/** Agent runs (workflows/agent-run.ts): start, read the transcript, answer approvals, cancel, follow as SSE. */
export const agentRunRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { db, temporal } = app.platform;
  const agents = new AgentStore(db);

  await app.register(
    operationRoutes({
      contract: agentRunContract,
      tag: 'agents',
      start: {
        path: '/',
        summary: 'Start an agent run (a Temporal workflow)',
        body: StartRun,
        errors: [404],
        statusUrl: (key) => `/v1/agent-runs/${key}`,
        links: {
          status: linkTo('GET /v1/agent-runs/{id}', byRunId),
          events: linkTo('GET /v1/agent-runs/{id}/events', byRunId),
          cancel: linkTo('POST /v1/agent-runs/{id}/cancel', byRunId),
          approve: linkTo('POST /v1/agent-runs/{id}/approvals', byRunId),
        },
        plan: async (body, run) => {
          const agent = await agents.getAgent(run.tenantId, body.agentId);
          if (!agent) throw new NotFoundError('agent', body.agentId);
          return {
            options: {
              args: [{ tenantId: run.tenantId, runId: run.key, agent, input: body.input }],
              // The run moves Phase on from here; starting with it set lists a fresh run as running, not as unset.
              typedSearchAttributes: [{ key: PhaseKey, value: 'running' }],
              staticSummary: `Agent ${agent.id} on ${agent.model}`,
              // Each approval has its own deadline; this bounds a run whatever happens.
              workflowExecutionTimeout: '30 days',
            },
          };
        },
      },
      path: '/:id',
      read: { summary: 'The run so far: phase, messages, tool calls, approvals, pending call', response: AgentRunRead },
      cancel: { summary: 'Cancel the run: nothing more is called after it' },
      approvals: {
        summary: 'Approve or deny the pending tool call, naming its action hash',
        body: Answer,
        conflictField: 'body.actionHash',
        response: AgentRunStatusSchema,
      },
    }),
  );

  app.get(
    '/:id/events',
    {
      preHandler: requireRole(OPERATION_ROLES.read),
      schema: {
        tags: ['agents'],
        summary: 'Server-sent events: the run status each time it changes, until it ends',
        params: IdParams,
        response: {
          200: {
            description:
              'text/event-stream: `event: status` with the run as the status query answers it (GET without workflowId and workflowStatus) each time it changes, then `event: end`; `event: error` with a message if the run cannot be read',
            content: { 'text/event-stream': { schema: AgentRunEvent } },
          },
          ...errorResponses(400, 404),
        },
      },
    },
    async (request, reply) => {
      const { handle } = await operationRun(temporal, agentRunContract, request.principal!.tenantId, request.params.id);
      request.auditWorkflowId = handle.workflowId;
      const out = auditedStream(app, request, reply, 'text/event-stream');
      let closed = false;
      request.raw.on('close', () => (closed = true));
      let last = '';
      try {
        while (!closed) {
          const status = await handle.query(agentRunContract.statusQuery);
          const text = JSON.stringify(status);
          if (text !== last) out.write(`event: status\ndata: ${text}\n\n`);
          last = text;
          if (TERMINAL_AGENT_PHASES.includes(status.phase)) break;
          await new Promise((r) => setTimeout(r, EVENTS_POLL_MS));
        }
        out.write('event: end\ndata: {}\n\n');
      } catch (err) {
        out.write(`event: error\ndata: ${JSON.stringify({ message: (err as Error).message })}\n\n`);
      }
      out.end();
    },
  );
};
