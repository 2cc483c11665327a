import { operations } from './generated/operations';

export type Operation = (typeof operations)[number];

const compiled = operations.map((op) => ({
  op,
  names: [...op.path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]!),
  pattern: new RegExp(`^${op.path.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\\?\{[^}]+\\?\}/g, '([^/]+)')}$`),
}));

/** The document's operation a request is for, with its path parameters (percent-decoded). */
export function matchOperation(
  method: string,
  path: string,
): { op: Operation; params: Record<string, string> } | { op: undefined; allow: string[] } {
  const allow: string[] = [];
  for (const c of compiled) {
    const m = c.pattern.exec(path);
    if (!m) continue;
    if (c.op.method !== method) {
      allow.push(c.op.method);
      continue;
    }
    return { op: c.op, params: Object.fromEntries(c.names.map((n, i) => [n, decodeURIComponent(m[i + 1]!)])) };
  }
  return { op: undefined, allow };
}

export function operationOf(method: string, path: string): Operation | undefined {
  return matchOperation(method, path).op;
}
