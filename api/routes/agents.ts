import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { qualifiedToolName } from '../../contracts/agent-run';
import { NotFoundError, PlatformError } from '../../common/errors';
import { AgentStore } from '../../common/store/agents';
import { requireRole } from '../plugins/auth';
import { AgentSchema } from '../operation-schemas';
import { linkTo } from '../openapi-links';
import { errorResponses, ResourceId } from '../schemas';

const AgentBody = Type.Object(
  {
    model: Type.String({ minLength: 1, maxLength: 256, description: 'a model the gateway routes for the tenant' }),
    systemPrompt: Type.String({ maxLength: 32_000 }),
    tools: Type.Array(Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' }), {
      maxItems: 128,
      uniqueItems: true,
      description: 'qualified tool names `<server>__<tool>`',
    }),
    stepLimit: Type.Integer({ minimum: 1, maximum: 1000, default: 10 }),
    approvalTimeoutSeconds: Type.Integer({ minimum: 1, maximum: 2_592_000, default: 3600 }),
  },
  { additionalProperties: false },
);

/** Agent definitions: model, system prompt, a tool allowlist out of the tenant's registered tools, step limit, approval deadline. */
export const agentRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const agents = new AgentStore(app.platform.db);

  app.put(
    '/:id',
    {
      preHandler: requireRole('developer'),
      links: {
        200: {
          agent: linkTo('GET /v1/agents/{id}', { parameters: { id: '$response.body#/id' } }),
          run: linkTo('POST /v1/agent-runs/', {
            requestBody: { agentId: '$response.body#/id' },
            description: 'start a run of this agent (the input is the caller’s)',
          }),
        },
      },
      schema: {
        tags: ['agents'],
        summary: 'Create or replace an agent definition',
        params: Type.Object({ id: ResourceId }),
        body: AgentBody,
        response: { 200: AgentSchema, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const tenantId = request.principal!.tenantId;
      const registered = new Set((await agents.listTools(tenantId)).map((t) => qualifiedToolName(t.serverId, t.name)));
      const unknown = request.body.tools.findIndex((t) => !registered.has(t));
      // A reference to a tool the tenant has not registered: the thing named is missing, not the request malformed.
      if (unknown >= 0)
        throw new PlatformError(
          404,
          'not_found',
          `tool '${request.body.tools[unknown]}' is not a registered tool of this tenant`,
          { field: `body.tools.${unknown}` },
        );
      return agents.putAgent(tenantId, { id: request.params.id, ...request.body });
    },
  );

  app.get(
    '/:id',
    {
      preHandler: requireRole('viewer'),
      schema: {
        tags: ['agents'],
        summary: 'An agent definition',
        params: Type.Object({ id: ResourceId }),
        response: { 200: AgentSchema, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const agent = await agents.getAgent(request.principal!.tenantId, request.params.id);
      if (!agent) throw new NotFoundError('agent', request.params.id);
      return agent;
    },
  );
};
