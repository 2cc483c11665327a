import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { ApprovalRequest } from './approvals';
import type { OperationContract } from './operations';

/** Agent runtime domain types (DESIGN.md, Operations 5), shared by the API, activities and the agent-run workflow: plain data only. */

export const RiskLevels = ['read-only', 'write', 'destructive'] as const;
export type RiskLevel = (typeof RiskLevels)[number];

/** The MCP tool annotations a server reports: its claims about a tool, shown as such (the spec calls them hints). */
export interface ToolAnnotations {
  readOnlyHint?: boolean;
  destructiveHint?: boolean;
}

/**
 * The risk a tool runs under. A server's annotations never lower it: the MCP specification treats annotations from
 * untrusted servers as untrusted, and a server that calls its `purge` tool read-only would otherwise run it
 * unapproved. So a tool is read-only only when a person says so: the tenant's admin (first), or the platform operator
 * in the catalog entry the server runs from; without either word it is a write (it waits for approval), and
 * `destructiveHint: true` may raise it to destructive.
 */
export function effectiveRisk(
  adminRisk: RiskLevel | null,
  catalogRisk: RiskLevel | null,
  annotations: ToolAnnotations,
): RiskLevel {
  const classified = adminRisk ?? catalogRisk;
  if (classified !== null) return classified;
  return annotations.destructiveHint === true ? 'destructive' : 'write';
}

/** `<server>__<tool>`: the name the model sees, within OpenAI's function-name alphabet `[A-Za-z0-9_-]{1,64}`. */
export const qualifiedToolName = (serverId: string, tool: string): string => `${serverId}__${tool}`;
export function splitToolName(qualified: string): { serverId: string; tool: string } | undefined {
  const i = qualified.indexOf('__');
  return i > 0 && i + 2 < qualified.length
    ? { serverId: qualified.slice(0, i), tool: qualified.slice(i + 2) }
    : undefined;
}

export interface AgentDefinition {
  id: string;
  model: string;
  systemPrompt: string;
  /** Qualified tool names the agent may call. */
  tools: string[];
  stepLimit: number;
  approvalTimeoutSeconds: number;
}

/** A tool as offered to the model (OpenAI tools format) plus what the runtime needs to police it. */
export interface AgentTool {
  name: string;
  description: string;
  parameters: Record<string, unknown>;
}

export interface AgentRunInput {
  tenantId: string;
  runId: string;
  agent: AgentDefinition;
  input: string;
  /** Carried over by continue-as-new. */
  resume?: AgentRunState;
}

/** OpenAI chat messages as the run keeps them. */
export type ChatMessage =
  | { role: 'system' | 'user'; content: string }
  | { role: 'assistant'; content: string | null; tool_calls?: ModelToolCall[] }
  | { role: 'tool'; tool_call_id: string; content: string };

export interface ModelToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** What the policy check answers for one requested tool call. */
export type ToolVerdict =
  | { verdict: 'refused'; reason: string }
  | { verdict: 'run'; risk: RiskLevel; definitionHash: string }
  | { verdict: 'approval'; risk: RiskLevel; definitionHash: string; actionHash: string };

export interface Approval {
  decision: 'approved' | 'denied';
  /** The approver's subject, or `deadline` when nobody answered in time. */
  by: string;
  at: number;
  reason: string | null;
}

export interface ToolCallRecord {
  id: string;
  step: number;
  tool: string;
  arguments: unknown;
  risk: RiskLevel | null;
  status: 'refused' | 'awaiting_approval' | 'denied' | 'running' | 'succeeded' | 'failed' | 'cancelled';
  reason: string | null;
  actionHash: string | null;
  approval: Approval | null;
  /** Result preview; the whole result is in `resultRef` when it was too large to keep inline. */
  result: string | null;
  resultRef: string | null;
  at: number;
}

export const AgentRunPhases = [
  'running',
  'awaiting_approval',
  'completed',
  'step_limit',
  'cancelled',
  'failed',
] as const;
export type AgentRunPhase = (typeof AgentRunPhases)[number];
export const TERMINAL_AGENT_PHASES: readonly AgentRunPhase[] = ['completed', 'step_limit', 'cancelled', 'failed'];

export interface AgentRunState {
  messages: ChatMessage[];
  toolCalls: ToolCallRecord[];
  step: number;
}

/** What the `transcript` query answers. */
export interface AgentRunStatus extends AgentRunState {
  runId: string;
  agentId: string;
  phase: AgentRunPhase;
  /** The call waiting for an approver: the exact tool, arguments and the hash an approval must name. */
  pending: {
    toolCallId: string;
    tool: string;
    arguments: unknown;
    risk: RiskLevel;
    actionHash: string;
    deadline: number;
  } | null;
  answer: string | null;
  failureReason: string | null;
  startedAt: number;
  finishedAt: number | null;
}

/** An approver's answer to a pending tool call, as the API hands it to the `approval` Update. */
export interface ToolApprovalRequest extends ApprovalRequest {
  actionHash: string;
}

export const AgentRunFailures = {
  failed: 'AgentRunFailed',
  /** The model server refused the request as malformed: retrying cannot help. */
  modelRejected: 'ModelRequestRejected',
  toolChanged: 'ToolDefinitionChanged',
  toolGone: 'ToolNotFound',
} as const;

/** A multi-step agent run with MCP tools and human approval of risky calls (POST /v1/agent-runs). */
export const agentRunContract = {
  kind: 'agent-run',
  workflowType: 'agentRun',
  resource: 'agent-run',
  idField: 'runId',
  /** Named `transcript` from the start: it answers the whole conversation, not only the phase. */
  statusQuery: defineQuery<AgentRunStatus>('transcript'),
  /** An approver's answer to the pending tool call, naming its action hash. */
  approvalUpdate: defineUpdate<AgentRunStatus, [ToolApprovalRequest]>('approval'),
  terminalPhases: TERMINAL_AGENT_PHASES,
} as const satisfies OperationContract<AgentRunStatus, ToolApprovalRequest>;
