import {
  allHandlersFinished,
  ApplicationFailure,
  condition,
  ContinueAsNew,
  continueAsNew,
  isCancellation,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import { messageOf } from './support/failures';
import type { InferenceActivities } from '../activities/inference';
import type { McpActivities, ToolAuditEntry } from '../activities/mcp';
import {
  agentRunContract,
  AgentRunFailures,
  type AgentRunInput,
  type AgentRunStatus,
  type Approval,
  type ModelToolCall,
  type ToolApprovalRequest,
  type ToolCallRecord,
} from '../contracts/agent-run';
import { checkApprover, rejected } from './support/approvals';
import { trackStatus } from './support/status';

const model = proxyActivities<InferenceActivities>({
  startToCloseTimeout: '2 minutes',
  retry: {
    initialInterval: '1 second',
    maximumInterval: '20 seconds',
    maximumAttempts: 5,
    nonRetryableErrorTypes: [AgentRunFailures.modelRejected],
  },
});
const policy = proxyActivities<McpActivities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1 second', maximumInterval: '10 seconds', maximumAttempts: 5 },
});
const TOOL_ERRORS = [AgentRunFailures.toolChanged, AgentRunFailures.toolGone];
const readOnlyTool = proxyActivities<McpActivities>({
  startToCloseTimeout: '1 minute',
  retry: {
    initialInterval: '1 second',
    maximumInterval: '10 seconds',
    maximumAttempts: 3,
    nonRetryableErrorTypes: TOOL_ERRORS,
  },
});
/** A tool with side effects runs at most once per approval: a retry could repeat an effect the approver allowed once. */
const sideEffectTool = proxyActivities<McpActivities>({
  startToCloseTimeout: '1 minute',
  retry: { maximumAttempts: 1 },
});

/**
 * An agent run: model call through the gateway (OpenAI tools format) → each tool call checked (allowlist, schema,
 * pinned definition) → read-only tools run at once, every other tool waits for an approver until the deadline
 * (no answer = denied; a denied tool is never called) → results back to the model → until a final answer or the
 * step limit. Long runs continue as new with their transcript.
 */
export async function agentRun(input: AgentRunInput): Promise<AgentRunStatus> {
  const { tenantId, agent } = input;
  const wfId = workflowInfo().workflowId;
  const status: AgentRunStatus = {
    runId: input.runId,
    agentId: agent.id,
    phase: 'running',
    messages: input.resume?.messages ?? [
      { role: 'system', content: agent.systemPrompt },
      { role: 'user', content: input.input },
    ],
    toolCalls: input.resume?.toolCalls ?? [],
    step: input.resume?.step ?? 0,
    pending: null,
    answer: null,
    failureReason: null,
    startedAt: Date.now(),
    finishedAt: null,
  };
  const enter = trackStatus(agentRunContract.statusQuery, status, 'phase');
  let decision: Approval | undefined;

  setHandler(
    agentRunContract.approvalUpdate,
    (r) => {
      decision = {
        decision: r.decision === 'approve' ? 'approved' : 'denied',
        by: r.by,
        at: Date.now(),
        reason: r.reason ?? null,
      };
      return status;
    },
    {
      validator: (r: ToolApprovalRequest) => {
        checkApprover(r, tenantId, 'agent run');
        const answered = status.toolCalls.find((c) => c.actionHash === r.actionHash && c.approval !== null);
        if (answered)
          rejected(
            `action ${r.actionHash} was already answered: ${answered.approval!.decision} by ${answered.approval!.by}`,
          );
        if (status.pending === null || decision !== undefined)
          rejected(`no tool call awaits approval; the run is ${status.phase}`);
        if (r.actionHash !== status.pending!.actionHash)
          rejected(`stale action hash: the pending action is ${status.pending!.actionHash} (${status.pending!.tool})`);
      },
    },
  );

  const audit = (r: ToolCallRecord, outcome: ToolAuditEntry['outcome'], principal: string) =>
    policy.auditToolCall({
      tenantId,
      workflowId: wfId,
      toolCallId: r.id,
      tool: r.tool,
      principal,
      outcome,
      risk: r.risk,
    });

  /** Handles one requested call to the end (refused, denied, or run) and answers the tool message for the model. */
  const handleToolCall = async (call: ModelToolCall): Promise<string> => {
    const record: ToolCallRecord = {
      id: call.id,
      step: status.step,
      tool: call.function.name,
      arguments: call.function.arguments,
      risk: null,
      status: 'running',
      reason: null,
      actionHash: null,
      approval: null,
      result: null,
      resultRef: null,
      at: Date.now(),
    };
    status.toolCalls.push(record);
    const verdict = await policy.checkToolCall({
      tenantId,
      workflowId: wfId,
      agentId: agent.id,
      step: status.step,
      allowlist: agent.tools,
      call,
    });
    if (verdict.verdict === 'refused') {
      Object.assign(record, { status: 'refused', reason: verdict.reason });
      return `Refused: ${verdict.reason}. The tool was not called.`;
    }
    const args = JSON.parse(call.function.arguments || '{}') as Record<string, unknown>;
    record.arguments = args;
    record.risk = verdict.risk;
    if (verdict.verdict === 'approval') {
      const timeoutMs = agent.approvalTimeoutSeconds * 1000;
      record.status = 'awaiting_approval';
      record.actionHash = verdict.actionHash;
      status.pending = {
        toolCallId: call.id,
        tool: record.tool,
        arguments: args,
        risk: verdict.risk,
        actionHash: verdict.actionHash,
        deadline: Date.now() + timeoutMs,
      };
      decision = undefined;
      enter('awaiting_approval');
      const answered = await condition(() => decision !== undefined, timeoutMs);
      record.approval = answered
        ? decision!
        : {
            decision: 'denied',
            by: 'deadline',
            at: Date.now(),
            reason: `no answer within ${agent.approvalTimeoutSeconds}s`,
          };
      status.pending = null;
      decision = undefined;
      enter('running');
      if (record.approval.decision === 'denied') {
        Object.assign(record, { status: 'denied', reason: record.approval.reason });
        await audit(record, 'denied', record.approval.by);
        return `Denied: a human did not approve this call (${record.approval.by === 'deadline' ? 'no answer before the deadline' : `denied by ${record.approval.by}`}). The tool was not called; continue without it.`;
      }
    }
    const runner = verdict.risk === 'read-only' ? readOnlyTool : sideEffectTool;
    try {
      const result = await runner.callMcpTool({
        tenantId,
        workflowId: wfId,
        agentId: agent.id,
        toolCallId: call.id,
        tool: record.tool,
        arguments: args,
        definitionHash: verdict.definitionHash,
        risk: verdict.risk,
      });
      Object.assign(record, {
        status: result.isError ? 'failed' : 'succeeded',
        result: result.text,
        resultRef: result.ref,
      });
      return result.text;
    } catch (err) {
      if (isCancellation(err)) throw err;
      // A tool failure is news for the model, not the end of the run.
      Object.assign(record, { status: 'failed', reason: messageOf(err) });
      return `The tool failed: ${record.reason}`;
    }
  };

  try {
    const tools = await policy.agentTools(tenantId, agent.tools);
    while (status.step < agent.stepLimit) {
      if (workflowInfo().continueAsNewSuggested) {
        await condition(allHandlersFinished);
        return await continueAsNew<typeof agentRun>({
          ...input,
          resume: { messages: status.messages, toolCalls: status.toolCalls, step: status.step },
        });
      }
      const reply = await model.chatCompletion({
        tenantId,
        traceId: wfId.replace(/[^\w.:-]/g, '.'),
        model: agent.model,
        messages: status.messages,
        tools,
      });
      status.step++;
      status.messages.push({
        role: 'assistant',
        content: reply.content,
        ...(reply.toolCalls.length ? { tool_calls: reply.toolCalls } : {}),
      });
      if (reply.toolCalls.length === 0) {
        status.answer = reply.content ?? '';
        break;
      }
      for (const call of reply.toolCalls)
        status.messages.push({ role: 'tool', tool_call_id: call.id, content: await handleToolCall(call) });
    }
  } catch (err) {
    if (err instanceof ContinueAsNew) throw err;
    status.finishedAt = Date.now();
    status.pending = null;
    if (isCancellation(err)) {
      for (const c of status.toolCalls)
        if (c.status === 'awaiting_approval' || c.status === 'running')
          Object.assign(c, { status: 'cancelled', reason: 'the run was cancelled' });
      enter('cancelled');
      throw err;
    }
    status.failureReason = messageOf(err);
    enter('failed');
    throw ApplicationFailure.nonRetryable(`agent run failed: ${status.failureReason}`, AgentRunFailures.failed);
  }
  status.finishedAt = Date.now();
  enter(status.answer !== null ? 'completed' : 'step_limit');
  // Lets an Update accepted in the last moment finish before the run closes.
  await condition(allHandlersFinished);
  return status;
}
