import type { FastifyInstance } from 'fastify';
import { bearer, eventually } from './platform';

export interface BatchObject {
  id: string;
  status: string;
  input_file_id: string;
  output_file_id: string | null;
  error_file_id: string | null;
  request_counts: { total: number; completed: number; failed: number };
  errors: {
    object: 'list';
    data: { code: string; message: string; param: string | null; line: number | null }[];
  } | null;
}

export interface OutputLine {
  id: string;
  custom_id: string;
  response: { status_code: number; request_id: string; body: Record<string, unknown> } | null;
  error: { code: string; message: string } | null;
}

/** `n` chat lines for `model`, custom_ids `req-<i>`, each prompt naming its line so answers can be matched. */
export const chatLines = (model: string, n: number, from = 0): string =>
  Array.from({ length: n }, (_, k) => {
    const i = from + k;
    return JSON.stringify({
      custom_id: `req-${i}`,
      method: 'POST',
      url: '/v1/chat/completions',
      body: { model, messages: [{ role: 'user', content: `line ${i}` }], max_tokens: 8 },
    });
  }).join('\n') + '\n';

/** A multipart upload as the OpenAI client sends it: its body and content type. */
export async function multipart(content: string, purpose = 'batch', filename = 'input.jsonl') {
  const form = new FormData();
  form.set('purpose', purpose);
  form.set('file', new Blob([content]), filename);
  const req = new Request('http://local/', { method: 'POST', body: form });
  return { payload: Buffer.from(await req.arrayBuffer()), contentType: req.headers.get('content-type')! };
}

export async function uploadFile(app: FastifyInstance, key: string, content: string, purpose = 'batch') {
  const { payload, contentType } = await multipart(content, purpose);
  return app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...bearer(key), 'content-type': contentType },
    payload,
  });
}

export const batchOf = async (app: FastifyInstance, key: string, id: string): Promise<BatchObject> =>
  (await app.inject({ method: 'GET', url: `/v1/batches/${id}`, headers: bearer(key) })).json();

export const untilBatch = (app: FastifyInstance, key: string, id: string, statuses: string[], timeoutMs?: number) =>
  eventually(
    `batch ${id} to be ${statuses.join(' or ')}`,
    async () => {
      const b = await batchOf(app, key, id);
      return statuses.includes(b.status) ? b : undefined;
    },
    timeoutMs,
  );

export async function fileLines(app: FastifyInstance, key: string, id: string | null): Promise<OutputLine[]> {
  if (!id) return [];
  const res = await app.inject({ method: 'GET', url: `/v1/files/${id}/content`, headers: bearer(key) });
  if (res.statusCode !== 200) throw new Error(`file ${id}: ${res.statusCode} ${res.body}`);
  return res.body
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as OutputLine);
}
