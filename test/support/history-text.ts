/**
 * A history as searchable text: the JSON plus every payload's data decoded from base64, since inputs,
 * results and search attributes are stored encoded and a plain scan of the JSON would never see a secret.
 */
export function historyText(history: unknown): string {
  const decoded: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      if (typeof o.data === 'string' && o.metadata && typeof o.metadata === 'object')
        decoded.push(Buffer.from(o.data, 'base64').toString('utf8'));
      if (o.data instanceof Uint8Array) decoded.push(Buffer.from(o.data).toString('utf8'));
      Object.values(o).forEach(walk);
    }
  };
  walk(history);
  return `${JSON.stringify(history)}\n${decoded.join('\n')}`;
}

/** Secrets that must never appear in a history: platform API keys and anything shaped like one. */
export const API_KEY_PATTERN = /llmhub_[a-z0-9]{16}_[A-Za-z0-9_-]{43}/;
