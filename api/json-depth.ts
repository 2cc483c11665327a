/**
 * Arrays and objects nested deeper than this in a request's JSON are refused with a 400. No request of the API or of
 * OpenAI's needs a tenth of it, and past a few thousand levels the recursive walks after parsing (JSON.stringify into
 * a workflow's history, the body's text checks, a request hash) overflow the stack: a 500, not an answer.
 */
export const MAX_JSON_DEPTH = 128;

/**
 * Whether JSON text (as sent) holds more than `max` opening brackets: only then can it nest deeper than `max`, so the
 * usual small body is answered by a byte search, not a walk.
 */
function bracketsOver(text: string | Buffer, max: number): boolean {
  let n = 0;
  for (const bracket of ['[', '{']) {
    for (let at = text.indexOf(bracket); at !== -1; at = text.indexOf(bracket, at + 1)) if (++n > max) return true;
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
