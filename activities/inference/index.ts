import { ApplicationFailure } from '@temporalio/common';
import { AgentRunFailures, type AgentTool, type ChatMessage, type ModelToolCall } from '../../contracts/agent-run';
import type { TenantStore } from '../../common/store/tenants';

export const RUNTIME_KEY_NAME = 'agent-runtime';
export const RUNTIME_KEY_MAX_AGE_MS = 24 * 3_600_000;

export interface InferenceActivityDeps {
  tenants: TenantStore;
  /** Base URL of the platform's own gateway (its /v1/chat/completions), so routing, limits, metering and audit apply. */
  gatewayUrl: string;
  /** Per model call; default 120 s. */
  modelTimeoutMs?: number;
}

export interface ModelTurn {
  tenantId: string;
  /** Becomes the gateway's trace id, so a run's model calls can be found in its logs and audit. */
  traceId: string;
  model: string;
  messages: ChatMessage[];
  tools: AgentTool[];
}

export interface ModelReply {
  content: string | null;
  toolCalls: ModelToolCall[];
  finishReason: string | null;
}

export const createInferenceActivities = ({ tenants, gatewayUrl, modelTimeoutMs = 120_000 }: InferenceActivityDeps) => {
  /**
   * The worker's own developer key per tenant, minted on first use and held only in memory: the history carries the
   * tenant id, never a credential, and the call spends the tenant's own limits and budget. A worker that restarts
   * or crashes cannot revoke what it held, so every mint revokes the tenant's runtime keys older than
   * RUNTIME_KEY_MAX_AGE_MS, and a worker re-mints its own at half that age: such keys never pile up.
   */
  const keys = new Map<string, { key: Promise<string>; mintedAt: number }>();
  const keyOf = (tenantId: string): Promise<string> => {
    const held = keys.get(tenantId);
    if (held && Date.now() - held.mintedAt < RUNTIME_KEY_MAX_AGE_MS / 2) return held.key;
    const mintedAt = Date.now();
    const key = tenants
      .revokeApiKeysNamed(tenantId, RUNTIME_KEY_NAME, mintedAt - RUNTIME_KEY_MAX_AGE_MS)
      .then(() => tenants.createApiKey(tenantId, RUNTIME_KEY_NAME, 'developer'))
      .then((k) => k.key);
    key.catch(() => keys.delete(tenantId));
    keys.set(tenantId, { key, mintedAt });
    return key;
  };

  return {
    /** One chat completion in the OpenAI tools format through the gateway. */
    async chatCompletion(t: ModelTurn): Promise<ModelReply> {
      const send = async () =>
        fetch(`${gatewayUrl}/v1/chat/completions`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            authorization: `Bearer ${await keyOf(t.tenantId)}`,
            'x-trace-id': t.traceId,
          },
          body: JSON.stringify({
            model: t.model,
            messages: t.messages,
            ...(t.tools.length
              ? { tools: t.tools.map((f) => ({ type: 'function', function: f })), tool_choice: 'auto' }
              : {}),
          }),
          signal: AbortSignal.timeout(modelTimeoutMs),
        });
      let res = await send();
      if (res.status === 401) {
        // The held key was revoked: mint another once.
        keys.delete(t.tenantId);
        res = await send();
      }
      const body = (await res.json().catch(() => undefined)) as
        | {
            choices?: {
              message?: { content?: string | null; tool_calls?: ModelToolCall[] };
              finish_reason?: string | null;
            }[];
            error?: { message?: string };
          }
        | undefined;
      if (!res.ok) {
        const message = `the gateway answered ${res.status}: ${body?.error?.message ?? 'no error message'}`;
        // 4xx other than rate limits will not change on retry (unknown model, bad request).
        if (res.status >= 400 && res.status < 500 && res.status !== 429)
          throw ApplicationFailure.nonRetryable(message, AgentRunFailures.modelRejected);
        throw ApplicationFailure.retryable(message);
      }
      const choice = body?.choices?.[0];
      if (!choice?.message) throw ApplicationFailure.retryable('the model answered without a message');
      return {
        content: choice.message.content ?? null,
        toolCalls: choice.message.tool_calls ?? [],
        finishReason: choice.finish_reason ?? null,
      };
    },
  };
};

export type InferenceActivities = ReturnType<typeof createInferenceActivities>;
