import { createHash } from 'node:crypto';
import {
  AgentRunFailures,
  type AgentTool,
  effectiveRisk,
  type ModelToolCall,
  qualifiedToolName,
  type RiskLevel,
  splitToolName,
  type ToolVerdict,
} from '../../contracts/agent-run';
import { ApplicationFailure } from '@temporalio/common';
import Ajv, { type ValidateFunction } from 'ajv';
import type { EgressPolicy } from '../../common/egress';
import { listTools, mcpRequest, withMcpClient, type DiscoveredTool } from '../../common/mcp';
import { objectUri, type ObjectStore } from '../../common/objectstore';
import type { AgentStore, McpToolRecord } from '../../common/store/agents';
import type { AuditStore } from '../../common/store/audit';
import type { McpCatalogStore } from '../../common/store/mcp-catalog';
import { McpDiscoveryFailures, type McpDiscoveryInput } from '../../contracts/mcp-discovery';

export interface McpActivityDeps {
  agents: AgentStore;
  audit: AuditStore;
  catalog: McpCatalogStore;
  objects: ObjectStore;
  platformBucket: string;
  /** Where HTTP MCP servers may be reached (LLMHUB_MCP_EGRESS_ALLOW). */
  egress: EgressPolicy;
  /** Per MCP request (connect, list, call); default 30 s. */
  mcpTimeoutMs?: number;
}

/** Results longer than this stay in object storage; the transcript and the model get a preview and the reference. */
export const INLINE_RESULT_CHARS = 8_000;

export interface ToolCallRequest {
  tenantId: string;
  workflowId: string;
  agentId: string;
  step: number;
  allowlist: string[];
  call: ModelToolCall;
}

export interface ToolInvocation {
  tenantId: string;
  workflowId: string;
  agentId: string;
  toolCallId: string;
  tool: string;
  arguments: Record<string, unknown>;
  definitionHash: string;
  risk: RiskLevel;
}

export interface ToolResult {
  isError: boolean;
  text: string;
  ref: string | null;
}

export interface ToolAuditEntry {
  tenantId: string;
  workflowId: string;
  toolCallId: string;
  tool: string;
  /** Who is answerable for the outcome: the agent, or the approver who allowed or denied it. */
  principal: string;
  outcome: 'succeeded' | 'failed' | 'refused' | 'denied';
  risk: RiskLevel | null;
}

const STATUS_BY_OUTCOME = { succeeded: 200, failed: 502, refused: 403, denied: 403 } as const;

/** The identity of one exact action: an approval names it, so it cannot be spent on other arguments or another definition. */
export const actionHashOf = (
  workflowId: string,
  step: number,
  call: ModelToolCall,
  args: unknown,
  definitionHash: string,
): string =>
  createHash('sha256')
    .update(JSON.stringify([workflowId, step, call.id, call.function.name, args, definitionHash]))
    .digest('hex');

const ajv = new Ajv({ strict: false, allErrors: false });
/** Compiled argument validators by definition hash: Ajv keeps every schema it compiles, so each is compiled once. */
const validators = new Map<string, ValidateFunction>();
const validatorOf = (t: McpToolRecord): ValidateFunction => {
  let v = validators.get(t.definitionHash);
  if (!v) {
    // Servers declare draft-07 or 2020-12 in $schema; the keywords tool schemas use validate the same under both.
    const { $schema: _ignored, ...schema } = t.inputSchema;
    v = ajv.compile(schema);
    validators.set(t.definitionHash, v);
  }
  return v;
};

export const createMcpActivities = ({
  agents,
  audit,
  catalog,
  objects,
  platformBucket,
  egress,
  mcpTimeoutMs = 30_000,
}: McpActivityDeps) => {
  const connect = { egress, timeoutMs: mcpTimeoutMs };
  const recordAudit = (e: ToolAuditEntry) =>
    audit.record({
      requestId: `${e.workflowId}#${e.toolCallId}`,
      tenantId: e.tenantId,
      principal: e.principal,
      role: e.risk ?? undefined,
      method: 'TOOL',
      route: 'mcp:tools/call',
      url: `mcp://${e.tool.replace('__', '/')}`,
      statusCode: STATUS_BY_OUTCOME[e.outcome],
      workflowId: e.workflowId,
    });

  /** The tool as the server describes it now; a definition other than the pinned one blocks the tool (recorded in the store). */
  async function liveDefinition(tenantId: string, pinned: McpToolRecord): Promise<DiscoveredTool | undefined> {
    const server = await agents.getServer(tenantId, pinned.serverId);
    if (!server) return undefined;
    const live = (
      await withMcpClient(server.endpoint, connect, (c) =>
        mcpRequest(server.endpoint, () => listTools(c, mcpTimeoutMs)),
      )
    ).find((t) => t.name === pinned.name);
    if (live && live.definitionHash !== pinned.definitionHash)
      await agents.markChanged(tenantId, pinned.serverId, pinned.definitionHash, live);
    return live;
  }

  return {
    /** The allowlisted tools in OpenAI tools format, as registered now (the model never sees a tool it may not call). */
    async agentTools(tenantId: string, allowlist: string[]): Promise<AgentTool[]> {
      const allowed = new Set(allowlist);
      return (await agents.listTools(tenantId))
        .filter((t) => allowed.has(qualifiedToolName(t.serverId, t.name)))
        .map((t) => ({
          name: qualifiedToolName(t.serverId, t.name),
          description: t.description,
          parameters: t.inputSchema,
        }));
    },

    /**
     * The policy for one tool call the model asked for, read at run time so it is recorded in history: allowlist,
     * registered and not blocked, the server still reports the pinned definition, the arguments match its schema;
     * then the risk decides whether it runs at once (read-only) or waits for an approver. Refusals are audited here.
     */
    async checkToolCall(r: ToolCallRequest): Promise<ToolVerdict> {
      const name = r.call.function.name;
      const refuse = async (reason: string, risk: RiskLevel | null = null): Promise<ToolVerdict> => {
        await recordAudit({
          tenantId: r.tenantId,
          workflowId: r.workflowId,
          toolCallId: r.call.id,
          tool: name,
          principal: `agent:${r.agentId}`,
          outcome: 'refused',
          risk,
        });
        return { verdict: 'refused', reason };
      };
      if (!r.allowlist.includes(name)) return refuse(`tool '${name}' is not on this agent's allowlist`);
      const parts = splitToolName(name);
      const pinned = parts && (await agents.getTool(r.tenantId, parts.serverId, parts.tool));
      if (!pinned) return refuse(`tool '${name}' is not registered`);
      const risk = effectiveRisk(pinned.adminRisk, pinned.catalogRisk, pinned.annotations);
      if (pinned.changed)
        return refuse(
          `tool '${name}' is blocked: its definition changed on the server and awaits an admin's re-approval`,
          risk,
        );
      let args: unknown;
      try {
        args = JSON.parse(r.call.function.arguments || '{}');
      } catch {
        return refuse(`the arguments of '${name}' are not valid JSON`, risk);
      }
      const validate = validatorOf(pinned);
      if (!validate(args))
        return refuse(`the arguments of '${name}' do not match its schema: ${ajv.errorsText(validate.errors)}`, risk);
      const live = await liveDefinition(r.tenantId, pinned);
      if (!live) return refuse(`tool '${name}' is no longer offered by its server`, risk);
      if (live.definitionHash !== pinned.definitionHash)
        return refuse(
          `tool '${name}' is blocked: its definition changed on the server and awaits an admin's re-approval`,
          risk,
        );
      if (risk === 'read-only') return { verdict: 'run', risk, definitionHash: pinned.definitionHash };
      return {
        verdict: 'approval',
        risk,
        definitionHash: pinned.definitionHash,
        actionHash: actionHashOf(r.workflowId, r.step, r.call, args, pinned.definitionHash),
      };
    },

    /**
     * Calls the tool on its server, in the same session that first confirms the definition is still the pinned one.
     * A tool error is a result for the model, not a failure; a large result is stored and passed by reference.
     */
    async callMcpTool(i: ToolInvocation): Promise<ToolResult> {
      const parts = splitToolName(i.tool)!;
      const server = await agents.getServer(i.tenantId, parts.serverId);
      if (!server)
        throw ApplicationFailure.nonRetryable(
          `MCP server '${parts.serverId}' is not registered`,
          AgentRunFailures.toolGone,
        );
      const outcome = await withMcpClient(server.endpoint, connect, async (client) => {
        const live = (await mcpRequest(server.endpoint, () => listTools(client, mcpTimeoutMs))).find(
          (t) => t.name === parts.tool,
        );
        if (!live)
          throw ApplicationFailure.nonRetryable(
            `tool '${i.tool}' is no longer offered by its server`,
            AgentRunFailures.toolGone,
          );
        if (live.definitionHash !== i.definitionHash) {
          await agents.markChanged(i.tenantId, parts.serverId, i.definitionHash, live);
          throw ApplicationFailure.nonRetryable(
            `tool '${i.tool}' changed its definition since it was approved; it is blocked`,
            AgentRunFailures.toolChanged,
          );
        }
        return mcpRequest(server.endpoint, () =>
          client.callTool({ name: parts.tool, arguments: i.arguments }, undefined, { timeout: mcpTimeoutMs }),
        );
      });
      const content = Array.isArray(outcome.content) ? (outcome.content as { type: string; text?: string }[]) : [];
      const text = content.map((c) => (c.type === 'text' ? (c.text ?? '') : `[${c.type} content]`)).join('\n');
      const isError = outcome.isError === true;
      let ref: string | null = null;
      if (text.length > INLINE_RESULT_CHARS) {
        const obj = { bucket: platformBucket, key: `agent-runs/${i.workflowId}/${i.toolCallId}.json` };
        await objects.ensureBucket(platformBucket);
        await objects.put(obj, JSON.stringify(outcome), 'application/json');
        ref = objectUri(obj);
      }
      await recordAudit({
        tenantId: i.tenantId,
        workflowId: i.workflowId,
        toolCallId: i.toolCallId,
        tool: i.tool,
        principal: `agent:${i.agentId}`,
        outcome: isError ? 'failed' : 'succeeded',
        risk: i.risk,
      });
      return {
        isError,
        text: ref ? `${text.slice(0, INLINE_RESULT_CHARS)}\n[truncated; the whole result is at ${ref}]` : text,
        ref,
      };
    },

    /** A catalog entry's tools as its server lists them, started in the sandbox with `owner`'s working directory. */
    async discoverCatalogTools({ catalogId, owner }: McpDiscoveryInput): Promise<DiscoveredTool[]> {
      const entry = await catalog.get(catalogId);
      if (!entry)
        throw ApplicationFailure.nonRetryable(
          `MCP catalog entry '${catalogId}' does not exist`,
          McpDiscoveryFailures.entryGone,
        );
      const { command, args, env, network } = entry;
      const endpoint = { transport: 'stdio' as const, catalogId, owner, command, args, env, network };
      try {
        return await withMcpClient(endpoint, connect, (c) => mcpRequest(endpoint, () => listTools(c, mcpTimeoutMs)));
      } catch (err) {
        throw ApplicationFailure.nonRetryable((err as Error).message, McpDiscoveryFailures.unavailable);
      }
    },

    /** Audits a call the workflow decided not to make (denied by an approver or by the deadline). */
    async auditToolCall(e: ToolAuditEntry): Promise<void> {
      await recordAudit(e);
    },
  };
};

export type McpActivities = ReturnType<typeof createMcpActivities>;
