/**
 * Arrays and objects nested deeper than this in a request's JSON are refused with a 400. No request of the API or of
 * OpenAI's needs a tenth of it, and past a few thousand levels the recursive walks after parsing (JSON.stringify into
 * a workflow's history, the body's text checks, a request hash) overflow the stack: a 500, not an answer.
 */
export const MAX_JSON_DEPTH = 128;

/**
 * Whether JSON text (as sent) holds more than `max` opening brackets: only then can it nest deeper than `max`, so the
 * usual body is answered by a scan of its bytes, not a walk of what was parsed. A plain loop: with Buffer.indexOf of a
 * string here, bench:gateway's gateway spent ~10 µs more CPU per request and ~25 µs more per stream than the build
 * without the check; with the loop, the same (3 rounds A/B).
 */
function bracketsOver(text: string | Buffer, max: number): boolean {
  // Fewer bytes than an opening and a closing bracket per level cannot nest that deep.
  if (text.length <= 2 * max) return false;
  let n = 0;
  if (typeof text === 'string') {
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if ((c === 0x5b || c === 0x7b) && ++n > max) return true;
    }
  } else {
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if ((c === 0x5b || c === 0x7b) && ++n > max) return true;
    }
  }
  return false;
}

/** Whether a value parsed from `text` nests arrays and objects deeper than `max` (the top level is 1); no recursion. */
export function nestsTooDeep(value: unknown, text: string | Buffer, max = MAX_JSON_DEPTH): boolean {
  if (value === null || typeof value !== 'object' || !bracketsOver(text, max)) return false;
  const stack: [object, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (depth > max) return true;
    for (const child of Array.isArray(v) ? (v as unknown[]) : Object.values(v))
      if (child !== null && typeof child === 'object') stack.push([child as object, depth + 1]);
  }
  return false;
}

export const TOO_DEEP = `nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels`;
