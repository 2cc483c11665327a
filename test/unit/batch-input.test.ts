import { describe, expect, it } from '@jest/globals';
import { batchShareOf, BATCH_SUBJECT } from '../../api/gateway/batch-share';
import { BatchInputChecker, MAX_EMBEDDING_INPUTS } from '../../api/batch-input';
import { BATCH_PAGE_LINES } from '../../contracts/batch';
import { CEILING_SUBJECT } from '../../common/store/limits';

const line = (id: string, extra: object = {}) =>
  JSON.stringify({ custom_id: id, method: 'POST', url: '/v1/embeddings', body: { model: 'm', input: 'é' }, ...extra });

/** The whole file in chunks of `chunk` bytes (the first line's é split across two at some sizes). */
function checkBatchInput(content: Buffer, chunk = content.length || 1, maxLineBytes = 1 << 20) {
  const checker = new BatchInputChecker(maxLineBytes);
  for (let at = 0; at < content.length; at += chunk) checker.write(content.subarray(at, at + chunk));
  return checker.end();
}

describe('BatchInputChecker', () => {
  it('keeps the byte offset of each page and the urls', () => {
    const lines = Array.from({ length: BATCH_PAGE_LINES * 2 + 1 }, (_, i) => line(`r${i}`));
    const content = Buffer.from(`${lines.join('\r\n')}\n`);
    const checked = checkBatchInput(content);
    expect(checked.lineCount).toBe(lines.length);
    expect(checked.urls).toEqual(['/v1/embeddings']);
    expect(checked.pageOffsets).toHaveLength(3);
    // Each offset is where its page's first line starts, in bytes (the é is two).
    for (const [page, offset] of checked.pageOffsets.entries())
      expect(
        content
          .subarray(offset)
          .toString('utf8')
          .startsWith(line(`r${page * BATCH_PAGE_LINES}`)),
      ).toBe(true);
  });

  it.each([
    [`${line('a')}\n\n${line('b')}\n`, 2, 'the line'],
    [`${line('a')}\n${line('a')}\n`, 2, 'custom_id'],
    [`${line('a', { custom_id: '' })}\n`, 1, 'custom_id'],
    [`${line('a', { method: 'PUT' })}\n`, 1, 'method'],
    [`${line('a', { body: { model: 'm', stream: true } })}\n`, 1, 'body.stream'],
    [`${line('a', { body: [] })}\n`, 1, 'body'],
    ['[1]\n', 1, 'the line'],
  ])('refuses %j at line %i, field %s', (content, at, field) => {
    expect(() => checkBatchInput(Buffer.from(content))).toThrow(
      expect.objectContaining({ statusCode: 400, details: { field: 'body.file', line: at, lineField: field } }),
    );
  });

  it('gives the same offsets, counts and refusals whatever the chunks the file arrives in', () => {
    const lines = Array.from({ length: BATCH_PAGE_LINES + 3 }, (_, i) => line(`r${i}`));
    const content = Buffer.from(`${lines.join('\n')}\n`);
    const whole = checkBatchInput(content);
    for (const chunk of [1, 7, 64, 4096]) expect(checkBatchInput(content, chunk)).toEqual(whole);
    // Without a trailing newline the last line still counts.
    expect(checkBatchInput(content.subarray(0, -1), 5)).toEqual(whole);
    const bad = Buffer.from(`${line('a')}\n${line('b', { method: 'GET' })}\n`);
    for (const chunk of [1, 3, 100])
      expect(() => checkBatchInput(bad, chunk)).toThrow(
        expect.objectContaining({ details: { field: 'body.file', line: 2, lineField: 'method' } }),
      );
  });

  it('refuses a line longer than the gateway takes, by number, without holding more of it', () => {
    const content = Buffer.from(`${line('a')}\n${line('b', { body: { model: 'm', input: 'x'.repeat(2000) } })}\n`);
    expect(() => checkBatchInput(content, 100, 1000)).toThrow(
      expect.objectContaining({ details: { field: 'body.file', line: 2, lineField: 'the line' } }),
    );
    expect(checkBatchInput(content, 100, 4000).lineCount).toBe(2);
  });

  it("refuses the line that takes the file past 50,000 embedding inputs (OpenAI's limit), counting a list's each", () => {
    const inputs = (n: number) => Array.from({ length: n }, (_, i) => `t${i}`);
    const chat = JSON.stringify({
      custom_id: 'chat',
      method: 'POST',
      url: '/v1/chat/completions',
      body: { model: 'm', messages: Array.from({ length: 10 }, () => ({ role: 'user', content: 'x' })) },
    });
    const lines = [
      line('a', { body: { model: 'm', input: inputs(MAX_EMBEDDING_INPUTS - 3) } }),
      chat,
      // One text's tokens are one input.
      line('b', { body: { model: 'm', input: [1, 2, 3, 4] } }),
      line('c', { body: { model: 'm', input: 'one' } }),
      line('d', { body: { model: 'm', input: ['x'] } }),
    ];
    expect(checkBatchInput(Buffer.from(`${lines.join('\n')}\n`)).lineCount).toBe(5);
    const past = [...lines, line('e', { body: { model: 'm', input: ['y', 'z'] } })];
    expect(() => checkBatchInput(Buffer.from(`${past.join('\n')}\n`))).toThrow(
      expect.objectContaining({ statusCode: 400, details: { field: 'body.file', line: 6, lineField: 'body.input' } }),
    );
  });

  it('refuses an empty file', () => {
    expect(() => checkBatchInput(Buffer.alloc(0))).toThrow(/no lines/);
  });
});

describe('batchShareOf', () => {
  const rule = (subject: string, windowSeconds: number, maxRequests: number | null) => ({
    tenantId: 't',
    subject,
    windowSeconds,
    maxRequests,
    maxTokens: 1000,
  });

  it("is half of the tightest tenant-wide limit, keys' own limits aside", () => {
    const share = batchShareOf([rule(CEILING_SUBJECT, 60, 600), rule('', 1, 5), rule('key:k', 1, 1)]);
    expect(share).toEqual([
      { tenantId: 't', subject: BATCH_SUBJECT, windowSeconds: 1, maxRequests: 2, maxTokens: 500 },
    ]);
  });

  it('is nothing without a tenant-wide limit', () => {
    expect(batchShareOf([rule('key:k', 1, 1)])).toEqual([]);
  });
});
