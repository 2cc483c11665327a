import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { KnowledgeStore } from '../../common/store/knowledge';
import { encodeCursor, KeyPart } from '../../common/store/pages';
import { inTransaction } from '../../common/store/pool';
import { bearer, startTestPlatform, uniqueId, type TestPlatform, type TestTenant } from '../support/platform';

let p: TestPlatform;
let acme: TestTenant;
let other: TestTenant;
let knowledge: KnowledgeStore;
const NAMESPACE = 'handbook';
const DOCUMENTS = 30;

beforeAll(async () => {
  p = await startTestPlatform({ worker: false });
  knowledge = new KnowledgeStore(p.db);
  [acme, other] = [await p.createTenant('acme'), await p.createTenant('other')];
  for (const [t, n] of [
    [acme, 7],
    [other, 3],
  ] as const)
    for (let i = 0; i < n; i++)
      await p.registry.createModel(t.id, { id: `m${String(i).padStart(2, '0')}`, name: `model ${i}`, description: '' });
  // One transaction: every version has the same created_at, so only the version name orders them.
  await inTransaction(p.db, async (c) => {
    for (const v of ['c', 'a', 'e', 'b', 'd'])
      await p.registry.insertVersion(c, acme.id, {
        modelId: 'm00',
        version: v,
        artifactUri: 's3://x/y',
        workflowId: v,
      });
  });
  for (let i = 0; i < 4; i++) await p.tenants.createApiKey(acme.id, `extra-${i}`, 'viewer');
  await knowledge.ensureNamespace(acme.id, NAMESPACE, 'default', 'c');
  await knowledge.recordIndexed(
    acme.id,
    NAMESPACE,
    Array.from({ length: DOCUMENTS }, (_, i) => ({
      documentId: `doc-${String(i).padStart(3, '0')}.md`,
      sourceUri: `s3://b/doc-${i}.md`,
      contentHash: 'h',
      chunkCount: i,
      ingestionId: 'i',
    })),
  );
});
afterAll(async () => {
  await p?.close();
});

const get = (url: string, key: string) => p.app.inject({ method: 'GET', url, headers: bearer(key) });
const fieldOf = (res: { json(): unknown }) =>
  (res.json() as { error: { details?: { field?: string } } }).error.details?.field;

/** Follows nextCursor to the end; every page but the last is full. */
async function walk<T>(url: string, key: string, prop: string, limit: number): Promise<T[]> {
  const items: T[] = [];
  let cursor: string | null = null;
  for (let pages = 0; pages < 100; pages++) {
    const sep = url.includes('?') ? '&' : '?';
    const res = await get(`${url}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, key);
    expect(res.statusCode).toBe(200);
    const body = res.json() as Record<string, unknown>;
    const page = body[prop] as T[];
    items.push(...page);
    cursor = body.nextCursor as string | null;
    if (cursor === null) return items;
    expect(page).toHaveLength(limit);
  }
  throw new Error(`${url} never reached its last page`);
}

describe('paging every list', () => {
  it('walks models, versions, API keys and documents to the end: each item once, in order', async () => {
    const models = await walk<{ id: string }>('/v1/models', acme.keys.viewer, 'models', 3);
    expect(models.map((m) => m.id)).toEqual(['m00', 'm01', 'm02', 'm03', 'm04', 'm05', 'm06']);

    const versions = await walk<{ version: string }>('/v1/models/m00/versions', acme.keys.viewer, 'versions', 2);
    expect(versions.map((v) => v.version)).toEqual(['a', 'b', 'c', 'd', 'e']);

    const all = (await get('/v1/api-keys?limit=1000', acme.keys.admin)).json() as {
      apiKeys: { id: string }[];
      nextCursor: string | null;
    };
    expect(all.nextCursor).toBeNull();
    expect(all.apiKeys).toHaveLength(9);
    const keys = await walk<{ id: string }>('/v1/api-keys', acme.keys.admin, 'apiKeys', 2);
    expect(keys.map((k) => k.id)).toEqual(all.apiKeys.map((k) => k.id));

    const docs = await walk<{ documentId: string; chunkCount: number }>(
      `/v1/knowledge/${NAMESPACE}/documents`,
      acme.keys.viewer,
      'documents',
      7,
    );
    expect(docs.map((d) => d.chunkCount)).toEqual(Array.from({ length: DOCUMENTS }, (_, i) => i));
    expect(new Set(docs.map((d) => d.documentId)).size).toBe(DOCUMENTS);
  });

  it('keeps the OpenAI list shape of /v1/models, with has_more beside nextCursor', async () => {
    const first = (await get('/v1/models?limit=5', acme.keys.viewer)).json() as Record<string, unknown>;
    expect(first).toMatchObject({ object: 'list', has_more: true, nextCursor: expect.any(String) });
    expect((first.data as { id: string }[]).map((m) => m.id)).toEqual(['m00', 'm01', 'm02', 'm03', 'm04']);
    const last = await get(`/v1/models?limit=5&cursor=${first.nextCursor as string}`, acme.keys.viewer);
    expect(last.json()).toMatchObject({ has_more: false, nextCursor: null });
    expect((last.json() as { data: unknown[] }).data).toHaveLength(2);
  });

  it('refuses a limit out of range and a malformed or foreign cursor, naming the field', async () => {
    for (const limit of ['0', '1001', '-1', 'many']) {
      const res = await get(`/v1/projects?limit=${limit}`, acme.keys.viewer);
      expect(res.statusCode).toBe(400);
      expect(fieldOf(res)).toBe('querystring.limit');
    }
    const modelsCursor = (await get('/v1/models?limit=1', acme.keys.viewer)).json().nextCursor as string;
    const bad: [string, string][] = [
      ['/v1/models', 'not-a-cursor'],
      ['/v1/models', `${modelsCursor}=`],
      // Another list's cursor, a wrong shape, a time past what the pattern allows: the document's pattern refuses them.
      ['/v1/api-keys', modelsCursor],
      ['/v1/models', `${modelsCursor}.extra`],
      ['/v1/api-keys', `api-keys.${'9'.repeat(17)}.eA`],
    ];
    for (const [url, cursor] of bad) {
      const res = await get(`${url}?cursor=${encodeURIComponent(cursor)}`, acme.keys.admin);
      expect(res.statusCode).toBe(400);
      expect(fieldOf(res)).toBe('querystring.cursor');
    }
    // Forged but of the documented form, a NUL (a database error if it reached SQL) and bytes that are not UTF-8
    // included, a cursor is a position to page from, never a 500.
    const apiKeys = { list: 'api-keys', parts: [KeyPart.time, KeyPart.text] };
    for (const [url, cursor] of [
      ['/v1/models', encodeCursor({ list: 'models', parts: [KeyPart.text] }, ['m\u0000'])],
      ['/v1/models', `models.${Buffer.from([0xff, 0x00]).toString('base64url')}`],
      ['/v1/api-keys', encodeCursor(apiKeys, ['2026-02-28T00:00:00.000000Z', 'x'])],
      ['/v1/api-keys', `api-keys.${'9'.repeat(16)}.`],
    ] as const) {
      const res = await get(`${url}?cursor=${encodeURIComponent(cursor)}`, acme.keys.admin);
      expect(res.statusCode).toBe(200);
    }
  });

  it("gives another tenant's cursor no reach: the tenant always comes from the credentials", async () => {
    const acmeCursor = (await get('/v1/models?limit=1', acme.keys.viewer)).json().nextCursor as string;
    const res = await get(`/v1/models?cursor=${encodeURIComponent(acmeCursor)}`, other.keys.viewer);
    expect(res.statusCode).toBe(200);
    // After acme's m00 in other's own list: other's m01 and m02, nothing of acme's (m03 and on).
    expect((res.json() as { models: { id: string }[] }).models.map((m) => m.id)).toEqual(['m01', 'm02']);
  });

  it('reads a page of documents, and of platform tenants, in a constant number of queries whatever its size', async () => {
    const original = p.db.query.bind(p.db);
    const seen: string[] = [];
    p.db.query = ((...args: Parameters<typeof original>) => {
      const q = args[0] as unknown;
      seen.push(typeof q === 'string' ? q : ((q as { text?: string }).text ?? ''));
      return (original as (...a: unknown[]) => unknown)(...args);
    }) as typeof p.db.query;
    const countOf = async (url: string, key: string, tables: RegExp) => {
      seen.length = 0;
      const res = await get(url, key);
      expect(res.statusCode).toBe(200);
      return seen.filter((q) => tables.test(q)).length;
    };
    try {
      const docs = `/v1/knowledge/${NAMESPACE}/documents`;
      const KNOWLEDGE = /knowledge_/;
      const small = await countOf(`${docs}?limit=2`, acme.keys.viewer, KNOWLEDGE);
      const large = await countOf(`${docs}?limit=${DOCUMENTS}`, acme.keys.viewer, KNOWLEDGE);
      // The namespace, then the page.
      expect(small).toBe(2);
      expect(large).toBe(small);

      const PER_TENANT = /gpu_quotas|gateway_limits|storage_grants/;
      const one = await countOf('/v1/platform/tenants?limit=1', p.operatorKey, PER_TENANT);
      const many = await countOf('/v1/platform/tenants?limit=1000', p.operatorKey, PER_TENANT);
      expect(one).toBe(3);
      expect(many).toBe(one);
    } finally {
      p.db.query = original;
    }
  });

  it('pages the platform tenants and the remaining lists, answering nextCursor in each', async () => {
    const tenants = await walk<{ id: string; storage: { bucket: string } }>(
      '/v1/platform/tenants',
      p.operatorKey,
      'tenants',
      1,
    );
    const ids = tenants.map((t) => t.id);
    expect(ids).toEqual(expect.arrayContaining([acme.id, other.id]));
    expect(ids).toEqual([...ids].sort());
    expect(new Set(ids).size).toBe(ids.length);
    expect(tenants.find((t) => t.id === acme.id)!.storage.bucket).toBe(acme.bucket);

    for (const [url, prop, key] of [
      ['/v1/projects', 'projects', acme.keys.viewer],
      ['/v1/limits', 'limits', acme.keys.viewer],
      ['/v1/knowledge', 'namespaces', acme.keys.viewer],
      ['/v1/mcp-servers', 'servers', acme.keys.viewer],
      ['/v1/platform/mcp-catalog', 'entries', p.operatorKey],
    ] as const) {
      const res = await get(`${url}?limit=1`, key);
      expect(res.statusCode).toBe(200);
      expect(Object.keys(res.json() as object).sort()).toEqual(['nextCursor', prop].sort());
    }
    const id = uniqueId('p');
    expect(
      (await p.app.inject({ method: 'POST', url: '/v1/projects', headers: bearer(acme.keys.admin), payload: { id } }))
        .statusCode,
    ).toBe(201);
    const projects = await walk<{ id: string }>('/v1/projects', acme.keys.viewer, 'projects', 1);
    expect(projects.map((x) => x.id)).toContain(id);
  });
});
