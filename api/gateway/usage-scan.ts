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

const NEWLINE = 0x0a;
const DATA = Buffer.from('data:');
const DONE = Buffer.from('data: [DONE]');

/**
 * Watches an SSE stream as it passes (bytes are forwarded untouched): counts data events and keeps the newest
 * chunks, so usage comes from the upstream's `usage` event when it sends one, else one token per streamed chunk.
 * It works on the bytes and keeps references to the last chunks instead of text: turning every chunk into a string
 * and re-slicing a 2 KB tail allocated several KB per streamed token, most of a stream's garbage.
 */
export class StreamUsage {
  private events = 0;
  /** The first bytes of the line in progress, as many as it takes to tell a data event from `data: [DONE]`. */
  private readonly head = Buffer.alloc(DONE.length);
  private headLength = 0;
  /** The newest chunks: enough of them to hold the last TAIL bytes. */
  private readonly tail: Buffer[] = [];
  private tailBytes = 0;

  push(chunk: Buffer): void {
    let start = 0;
    for (let nl = chunk.indexOf(NEWLINE); nl !== -1; nl = chunk.indexOf(NEWLINE, start)) {
      this.keepHead(chunk, start, nl);
      if (this.lineIsEvent()) this.events++;
      this.headLength = 0;
      start = nl + 1;
    }
    this.keepHead(chunk, start, chunk.length);
    this.tail.push(chunk);
    this.tailBytes += chunk.length;
    while (this.tailBytes - this.tail[0]!.length >= TAIL) this.tailBytes -= this.tail.shift()!.length;
  }

  /** Falls back to the caller's prompt estimate when the upstream reported no usage. */
  result(promptEstimate: number): TokenUsage {
    const reported = usageIn(Buffer.concat(this.tail).toString('latin1'));
    if (reported) return reported;
    return { promptTokens: promptEstimate, completionTokens: this.events };
  }

  private keepHead(chunk: Buffer, from: number, to: number): void {
    const n = Math.min(to - from, this.head.length - this.headLength);
    if (n > 0) this.headLength += chunk.copy(this.head, this.headLength, from, from + n);
  }

  private lineIsEvent(): boolean {
    const starts = (prefix: Buffer) => this.headLength >= prefix.length && this.head.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
    return starts(DATA) && !starts(DONE);
  }
}
