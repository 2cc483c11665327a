export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
}

/** Usage sits at the end of an answer (last SSE events, last JSON member); only this much tail is scanned. */
const TAIL = 2048;

const USAGE = '"usage"';
/** How much text after `"usage"` is read for its counts. */
const USAGE_SPAN = 400;

/** The last `usage` object in OpenAI-shaped text, read without parsing the (possibly large) whole answer. */
export function usageIn(text: string): TokenUsage | undefined {
  const at = text.lastIndexOf(USAGE);
  if (at === -1) return undefined;
  const rest = text.slice(at, at + USAGE_SPAN);
  if (/^"usage"\s*:\s*null/.test(rest)) return undefined;
  const prompt = /"prompt_tokens"\s*:\s*(\d+)/.exec(rest);
  const completion = /"completion_tokens"\s*:\s*(\d+)/.exec(rest);
  if (!prompt && !completion) return undefined;
  return { promptTokens: Number(prompt?.[1] ?? 0), completionTokens: Number(completion?.[1] ?? 0) };
}

export function usageOfBody(body: Buffer): TokenUsage | undefined {
  return (
    usageIn(body.toString('latin1', Math.max(0, body.length - TAIL))) ??
    (body.length > TAIL ? usageIn(body.toString('latin1')) : undefined)
  );
}

const NEWLINE = 0x0a;
const DATA = Buffer.from('data:');
const DONE = Buffer.from('data: [DONE]');
/** As many bytes of a line as it takes to tell a data event from `data: [DONE]`. */
const HEAD = DONE.length;

/**
 * Watches an SSE stream as it passes (bytes are forwarded untouched): counts data events and keeps the last TAIL
 * bytes, so usage comes from the upstream's `usage` event when it sends one, else one token per streamed chunk.
 * Everything lives in one buffer allocated per stream and nothing is allocated per chunk: turning chunks into
 * strings cost several KB of garbage per token, and keeping the last chunks themselves held ten Buffers and their
 * socket reads per open stream (a heap snapshot of 1,000 streams: about 5 KB each).
 */
export class StreamUsage {
  private events = 0;
  /** [0, HEAD): the first bytes of the line in progress; [HEAD, HEAD + TAIL): the newest bytes, a ring. */
  private readonly bytes = Buffer.allocUnsafeSlow(HEAD + TAIL);
  private headLength = 0;
  /** Where the next byte goes in the ring, and how many bytes it holds. */
  private ringAt = 0;
  private ringLength = 0;

  push(chunk: Buffer): void {
    let start = 0;
    for (let nl = chunk.indexOf(NEWLINE); nl !== -1; nl = chunk.indexOf(NEWLINE, start)) {
      this.keepHead(chunk, start, nl);
      if (this.lineIsEvent()) this.events++;
      this.headLength = 0;
      start = nl + 1;
    }
    this.keepHead(chunk, start, chunk.length);
    this.keepTail(chunk);
  }

  /**
   * Falls back to the caller's prompt estimate when the upstream reported no usage. Only the text from the last
   * `"usage"` on is made a string: the whole tail as text was most of what a stream allocated.
   */
  result(promptEstimate: number): TokenUsage {
    const ring = this.bytes.subarray(HEAD, HEAD + this.ringLength);
    // The ring's bytes in the stream's order: as they lie until it has wrapped.
    const tail =
      this.ringLength < TAIL ? ring : Buffer.concat([ring.subarray(this.ringAt), ring.subarray(0, this.ringAt)]);
    const at = tail.lastIndexOf(USAGE);
    const reported = at === -1 ? undefined : usageIn(tail.toString('latin1', at, at + USAGE_SPAN));
    if (reported) return reported;
    return { promptTokens: promptEstimate, completionTokens: this.events };
  }

  private keepHead(chunk: Buffer, from: number, to: number): void {
    const n = Math.min(to - from, HEAD - this.headLength);
    if (n > 0) this.headLength += chunk.copy(this.bytes, this.headLength, from, from + n);
  }

  private keepTail(chunk: Buffer): void {
    let from = Math.max(0, chunk.length - TAIL);
    while (from < chunk.length) {
      const copied = chunk.copy(this.bytes, HEAD + this.ringAt, from, from + TAIL - this.ringAt);
      from += copied;
      this.ringAt = (this.ringAt + copied) % TAIL;
      this.ringLength = Math.min(TAIL, this.ringLength + copied);
    }
  }

  private lineIsEvent(): boolean {
    return this.lineStarts(DATA) && !this.lineStarts(DONE);
  }

  /** A loop, not Buffer.compare: for a dozen bytes per line the native call cost more than the comparison. */
  private lineStarts(prefix: Buffer): boolean {
    if (this.headLength < prefix.length) return false;
    for (let i = 0; i < prefix.length; i++) if (this.bytes[i] !== prefix[i]) return false;
    return true;
  }
}
