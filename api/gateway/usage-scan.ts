export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
}

/** Usage sits at the end of an answer (last SSE events, last JSON member); only this much tail is scanned. */
const TAIL = 2048;

/** The last `usage` object in OpenAI-shaped text, read without parsing the (possibly large) whole answer. */
export function usageIn(text: string): TokenUsage | undefined {
  const at = text.lastIndexOf('"usage"');
  if (at === -1) return undefined;
  const rest = text.slice(at, at + 400);
  if (/^"usage"\s*:\s*null/.test(rest)) return undefined;
  const prompt = /"prompt_tokens"\s*:\s*(\d+)/.exec(rest);
  const completion = /"completion_tokens"\s*:\s*(\d+)/.exec(rest);
  if (!prompt && !completion) return undefined;
  return { promptTokens: Number(prompt?.[1] ?? 0), completionTokens: Number(completion?.[1] ?? 0) };
}

export function usageOfBody(body: Buffer): TokenUsage | undefined {
  return usageIn(body.toString('latin1', Math.max(0, body.length - TAIL))) ?? (body.length > TAIL ? usageIn(body.toString('latin1')) : undefined);
}

/**
 * Watches an SSE stream as it passes (bytes are forwarded untouched): counts data events and keeps the tail,
 * so usage comes from the upstream's `usage` event when it sends one, else one token per streamed chunk.
 */
export class StreamUsage {
  private events = 0;
  private partial = '';
  private tail = '';

  push(chunk: Buffer): void {
    // latin1 maps bytes 1:1, so a multi-byte character split across chunks cannot corrupt the ASCII looked for.
    const text = chunk.toString('latin1');
    const lines = this.partial + text;
    let start = 0;
    for (let nl = lines.indexOf('\n'); nl !== -1; nl = lines.indexOf('\n', start)) {
      if (lines.startsWith('data:', start) && !lines.startsWith('data: [DONE]', start)) this.events++;
      start = nl + 1;
    }
    this.partial = lines.slice(start);
    this.tail = (this.tail + text).slice(-TAIL);
  }

  /** Falls back to the caller's prompt estimate when the upstream reported no usage. */
  result(promptEstimate: number): TokenUsage {
    const reported = usageIn(this.tail);
    if (reported) return reported;
    return { promptTokens: promptEstimate, completionTokens: this.events };
  }
}
