import { BatchStore } from '../../common/store/batches';
import { credentialContext, ProviderStore } from '../../common/store/providers';
import { fileKey } from '../../contracts/batch';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { HTTPMethods, LightMyRequestResponse } from 'fastify';
import { PLATFORM_ADMIN, ROLE_EXTENSION } from '../../api/plugins/auth';
import { definitionHash } from '../../common/mcp';
import { AgentStore } from '../../common/store/agents';
import { KnowledgeStore } from '../../common/store/knowledge';
import { RoutingStore } from '../../common/store/routing';
import { agentRunContract } from '../../contracts/agent-run';
import { conversionContract } from '../../contracts/conversion';
import { fineTuneContract } from '../../contracts/fine-tune';
import { ingestionContract } from '../../contracts/ingestion';
import { workflowId } from '../../contracts/operations';
import { pipelineContract } from '../../contracts/pipeline';
import { rolloutContract } from '../../contracts/rollout';
import { serveModel } from '../support/gateway';
import {
  bearer,
  eventually,
  startTestPlatform,
  uniqueId,
  type TestPlatform,
  type TestTenant,
} from '../support/platform';

/**
 * The authorization matrix: every operation of /openapi.json, called by every kind of principal. Generic on purpose:
 * a route added later is walked too, and fails here until it publishes its role (x-llmhub-role) and enforces it.
 */

/** The routes that answer without credentials (`config: { public: true }`, and Swagger UI's /docs). */
const PUBLIC = ['GET /healthz', 'GET /readyz', 'GET /openapi.json', 'GET /docs'];

const TENANT_ROLES = ['viewer', 'developer', 'operator', 'approver', 'admin'] as const;
type TenantRole = (typeof TENANT_ROLES)[number];

/** Which keys may call an operation that needs the role: written out here, not derived from the auth plugin. */
const SATISFIED_BY: Record<TenantRole, readonly TenantRole[]> = {
  viewer: TENANT_ROLES,
  developer: ['developer', 'operator', 'admin'],
  operator: ['operator', 'admin'],
  approver: ['approver', 'admin'],
  admin: ['admin'],
};

/** Operations that publish a role but refuse every caller, with the reason. */
const REFUSED_TO_ALL: Record<string, string> = {
  'PUT /v1/quotas/gpu':
    "deprecated: a tenant's GPU quota is set by platform operators, so even a tenant admin gets 403",
};

/**
 * Operations whose path parameter (or body) names one of tenant A's objects but where another tenant's call acts on an
 * object of its own of the same name (names are per tenant), so 404 is not the answer; each must still be no 2xx on A's object, no 5xx
 * and no leak, and A's objects are checked unchanged at the end.
 */
const OWN_NAMESPACE_OF_CALLER: Record<string, string> = {
  'PUT /v1/agents/{id}': "creates or replaces the caller's own agent of that id",
  'POST /v1/knowledge/{namespace}/files':
    "uploads into the caller's own namespace of that name (400 here: the matrix sends no file)",
  'POST /v1/knowledge/{namespace}/ingestions':
    "starts an ingestion into the caller's own namespace of that name (terminated at the end)",
  'PUT /v1/prices': "prices the caller's own model of that name (its body names it; prices are per tenant)",
};

interface SchemaObject {
  type?: string;
  properties?: Record<string, SchemaObject>;
  required?: string[];
  minProperties?: number;
  items?: SchemaObject;
  minItems?: number;
  anyOf?: SchemaObject[];
  oneOf?: SchemaObject[];
  enum?: unknown[];
  const?: unknown;
  default?: unknown;
  pattern?: string;
  format?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
}
interface Parameter {
  name: string;
  in: 'path' | 'query' | 'header';
  required?: boolean;
  schema: SchemaObject;
}
interface Operation {
  method: string;
  path: string;
  role?: string;
  parameters: Parameter[];
  body?: SchemaObject;
}
interface DocumentedOperation {
  [ROLE_EXTENSION]?: string;
  parameters?: Parameter[];
  requestBody?: { content: Record<string, { schema: SchemaObject }> };
}
const label = (op: Pick<Operation, 'method' | 'path'>) => `${op.method} ${op.path}`;

let p: TestPlatform;
let a: TestTenant;
let b: TestTenant;
let ops: Operation[];
let cluster: string;
const MARKER = uniqueId('secret-of-a');
/** A fresh placeholder per run: names that exist in no tenant (path) or that a call may create (body). */
const ABSENT = uniqueId('absent');
const CREATED = uniqueId('matrix');
const RUN_KEY = uniqueId('run');
const idleQueue = uniqueId('idle');

/** Tenant A's objects, by the path segment before the parameter that names them. */
const objectsOfA: Record<string, string> = {};
const started = new Set<string>();
const SEEDED_RUNS = [
  rolloutContract,
  fineTuneContract,
  conversionContract,
  pipelineContract,
  agentRunContract,
  ingestionContract,
];

beforeAll(async () => {
  p = await startTestPlatform({ worker: false });
  [a, b] = [await p.createTenant('matrix-a'), await p.createTenant('matrix-b')];
  cluster = Object.keys(p.app.platform.clusters)[0]!;

  const model = uniqueId('model');
  await serveModel(p.db, a.id, model, { '1.0': 'http://127.0.0.1:9' }, { stable: '1.0' });
  await p.db.query('UPDATE models SET description = $3 WHERE tenant_id = $1 AND id = $2', [a.id, model, MARKER]);
  const namespace = uniqueId('ns');
  const knowledge = new KnowledgeStore(p.db);
  await knowledge.ensureNamespace(a.id, namespace, 'default', uniqueId('collection'));
  await knowledge.recordIndexed(a.id, namespace, [
    { documentId: MARKER, sourceUri: `s3://docs/${MARKER}`, contentHash: 'x', chunkCount: 1, ingestionId: RUN_KEY },
  ]);
  const agents = new AgentStore(p.db);
  const server = uniqueId('mcp');
  const tool = { name: 'lookup', description: MARKER, inputSchema: { type: 'object' }, annotations: {} };
  await agents.registerServer(a.id, server, { url: `http://127.0.0.1:9/${MARKER}` }, [
    { ...tool, definitionHash: definitionHash(tool) },
  ]);
  const agent = uniqueId('agent');
  await agents.putAgent(a.id, {
    id: agent,
    model,
    systemPrompt: MARKER,
    tools: [],
    stepLimit: 1,
    approvalTimeoutSeconds: 60,
  });
  const providers = new ProviderStore(p.db);
  const provider = uniqueId('provider');
  await providers.create({
    tenantId: a.id,
    id: provider,
    kind: 'openai',
    baseUrl: 'http://127.0.0.1:9/v1',
    apiVersion: null,
    headers: { 'x-marker': MARKER },
    models: { [model]: { model: MARKER } },
    credential: await p.app.platform.providers!.vault.seal(MARKER, credentialContext({ tenantId: a.id, id: provider })),
  });
  await providers.setRoute({
    tenantId: a.id,
    modelId: model,
    stable: provider,
    canary: null,
    canaryWeight: 0,
    fallbacks: [],
  });
  const project = uniqueId('project');
  await new RoutingStore(p.db).createProject(a.id, project, MARKER);
  // A batch input file (its bytes in A's bucket, so A's own read of it would succeed) and a batch reading it.
  const batches = new BatchStore(p.db);
  const file = `file-${uniqueId('matrix')}`;
  const line = JSON.stringify({ custom_id: MARKER, method: 'POST', url: '/v1/chat/completions', body: { model } });
  await p.objects.put({ bucket: a.bucket, key: fileKey(file) }, Buffer.from(`${line}\n`), 'application/jsonl');
  await batches.putFile(a.id, {
    id: file,
    purpose: 'batch',
    filename: `${MARKER}.jsonl`,
    bytes: line.length + 1,
    lineCount: 1,
    pageOffsets: [0],
    urls: ['/v1/chat/completions'],
    objectKey: fileKey(file),
  });
  const batch = `batch_${uniqueId('matrix')}`;
  await batches.createBatch(a.id, {
    id: batch,
    endpoint: '/v1/chat/completions',
    inputFileId: file,
    completionWindow: '24h',
    metadata: { marker: MARKER },
    createdBy: `key:${MARKER}`,
    total: 1,
    expiresAt: Date.now() + 86_400_000,
  });
  const key = await p.tenants.createApiKey(a.id, MARKER, 'viewer');
  // Runs of tenant A on a queue no worker polls: found by their ids, never queried, terminated at the end.
  for (const c of SEEDED_RUNS) {
    const id = workflowId(c.kind, a.id, RUN_KEY);
    await p.temporal.workflow.start(c.workflowType, { workflowId: id, taskQueue: idleQueue, args: [] });
    started.add(id);
  }
  Object.assign(objectsOfA, {
    models: model,
    versions: '1.0',
    knowledge: namespace,
    'mcp-servers': server,
    tools: tool.name,
    agents: agent,
    projects: project,
    providers: provider,
    'provider-routes': model,
    files: file,
    batches: batch,
    'api-keys': key.id,
    tenants: a.id,
    deployments: RUN_KEY,
    'fine-tunes': RUN_KEY,
    conversions: RUN_KEY,
    pipelines: RUN_KEY,
    'agent-runs': RUN_KEY,
    ingestions: RUN_KEY,
  });

  const doc = (await p.app.inject({ method: 'GET', url: '/openapi.json' })).json() as {
    paths: Record<string, Record<string, DocumentedOperation>>;
  };
  ops = Object.entries(doc.paths).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, op]) => ({
      method: method.toUpperCase(),
      path,
      role: op[ROLE_EXTENSION],
      parameters: op.parameters ?? [],
      body: op.requestBody ? Object.values(op.requestBody.content)[0]?.schema : undefined,
    })),
  );
});

afterAll(async () => {
  if (p) {
    await Promise.all(
      [...started].map((id) =>
        p.temporal.workflow
          .getHandle(id)
          .terminate('authorization matrix')
          .catch(() => undefined),
      ),
    );
    await p.close();
  }
});

interface Refs {
  values: Record<string, unknown>;
  /** The names replaced: where a body names tenant A's objects. */
  used: Set<string>;
}
const noRefs = (): Refs => ({ values: {}, used: new Set() });

/** Strings that satisfy the schemas' patterns; the first that fits is used. */
const samples = (placeholder: string) => [
  placeholder,
  `s3://matrix-bucket/${placeholder}`,
  'http://127.0.0.1:9/mcp',
  '/nonexistent/llmhub-matrix-command',
  '0'.repeat(64),
  '1Gi',
  `${placeholder}.md`,
  'USD',
  `file-${placeholder}`,
  `batch_${placeholder}`,
  '',
];

/**
 * A minimal valid value of the schema: required properties only, first enum member, first option. `refs` replaces
 * properties by name (ids of tenant A's objects, the configured cluster).
 */
function sample(s: SchemaObject, placeholder: string, refs: Refs, name = ''): unknown {
  if (name in refs.values) {
    refs.used.add(name);
    return refs.values[name];
  }
  if (s.const !== undefined) return s.const;
  if (s.enum) return s.enum[0];
  // An object's anyOf says which properties go together (below); any other anyOf offers alternatives.
  const options = s.type === 'object' ? undefined : (s.anyOf ?? s.oneOf);
  if (options) return sample(options.find((o) => o.type !== 'null') ?? options[0]!, placeholder, refs, name);
  if (s.default !== undefined && s.type !== 'object') return s.default;
  switch (s.type) {
    case 'object': {
      const keys = [...(s.required ?? []), ...(s.anyOf?.[0]?.required ?? [])];
      for (const k of Object.keys(s.properties ?? {}))
        if (keys.length < (s.minProperties ?? 0) && !keys.includes(k)) keys.push(k);
      return Object.fromEntries(keys.map((k) => [k, sample(s.properties?.[k] ?? {}, placeholder, refs, k)]));
    }
    case 'array':
      return Array.from({ length: s.minItems ?? 0 }, (_, i) => sample(s.items ?? {}, `${placeholder}${i}`, refs));
    case 'integer':
    case 'number':
      return s.minimum ?? (s.exclusiveMinimum !== undefined ? s.exclusiveMinimum + 1 : Math.min(1, s.maximum ?? 1));
    case 'boolean':
      return false;
    default: {
      if (s.format === 'date-time') return new Date(Date.now() + 86_400_000).toISOString();
      const fits = samples(placeholder).find(
        (v) =>
          (!s.pattern || new RegExp(s.pattern, 'u').test(v)) &&
          v.length >= (s.minLength ?? 0) &&
          v.length <= (s.maxLength ?? Infinity),
      );
      if (fits === undefined) throw new Error(`no sample string fits ${JSON.stringify(s)}: add one to samples()`);
      return fits;
    }
  }
}

/** The segment before `{param}`: what kind of object the parameter names. */
const segmentBefore = (path: string, param: string) => {
  const parts = path.split('/');
  return parts[parts.indexOf(`{${param}}`) - 1]!;
};

/**
 * The request of an operation: path parameters naming tenant A's objects (`ofA`) or absent ones, a body of the
 * schema's required properties whose references name A's objects or absent ones.
 */
function requestOf(op: Operation, ofA: boolean, bucket: string) {
  let url = op.path;
  const query: string[] = [];
  for (const param of op.parameters) {
    if (param.in === 'path') {
      const kind = segmentBefore(op.path, param.name);
      const value = ofA ? objectsOfA[kind] : String(sample(param.schema, ABSENT, noRefs()));
      if (value === undefined && !op.path.startsWith('/v1/platform/'))
        throw new Error(
          `${label(op)}: which object of tenant A does '${kind}/{${param.name}}' name? add it to objectsOfA`,
        );
      url = url.replace(`{${param.name}}`, encodeURIComponent(value ?? ABSENT));
    } else if (param.in === 'query' && param.required) {
      query.push(`${param.name}=${encodeURIComponent(String(sample(param.schema, CREATED, noRefs())))}`);
    }
  }
  // Settings a route checks before it looks for the object (a configured cluster, a URI in the caller's storage
  // scope, which is 403 outside it), then references.
  const valid = { cluster, artifactUri: `s3://${bucket}/${CREATED}`, bucket };
  const refs: Refs = {
    values: ofA
      ? {
          ...valid,
          modelId: objectsOfA.models,
          model: objectsOfA.models,
          version: '1.0',
          agentId: objectsOfA.agents,
          input_file_id: objectsOfA.files,
        }
      : { ...valid, modelId: ABSENT, model: ABSENT, agentId: ABSENT, input_file_id: `file-${ABSENT}` },
    used: new Set(),
  };
  const payload = op.body ? (sample(op.body, CREATED, refs) as object) : undefined;
  return {
    request: {
      method: op.method as HTTPMethods,
      url: query.length ? `${url}?${query.join('&')}` : url,
      ...(payload ? { payload } : {}),
    },
    bodyNamesA: ofA && [...refs.used].some((n) => !(n in valid)),
  };
}

interface Outcome {
  op: string;
  bodyNamesA: boolean;
  who: string;
  status: number;
  body: string;
}

/** Calls the operation; a run it starts is terminated at the end, so the matrix leaves nothing running. */
/**
 * Operations whose sample request would wait for a run in the worker (a catalog entry's tool discovery); the matrix runs
 * no worker, so they are sent an empty body: a 400 after the credential and role checks still shows those passed.
 */
const WAITS_FOR_WORKER = new Set(['POST /v1/platform/mcp-catalog/']);
/** The WAITS_FOR_WORKER operations the matrix met: a renamed route must not silently wait for a worker again. */
const waitedFor = new Set<string>();

async function call(op: Operation, who: string, key: string | undefined, ofA: boolean): Promise<Outcome> {
  const built = requestOf(op, ofA, key && Object.values(b.keys).includes(key) ? b.bucket : a.bucket);
  const { bodyNamesA } = built;
  const request = WAITS_FOR_WORKER.has(label(op)) ? { ...built.request, payload: {} } : built.request;
  if (WAITS_FOR_WORKER.has(label(op))) waitedFor.add(label(op));
  const res: LightMyRequestResponse = await p.app.inject({ ...request, headers: key ? bearer(key) : {} });
  if (res.statusCode < 300 && String(res.headers['content-type']).startsWith('application/json')) {
    const id = (res.json() as { workflowId?: unknown }).workflowId;
    if (typeof id === 'string') started.add(id);
  }
  return { op: label(op), who, status: res.statusCode, body: res.body, bodyNamesA };
}

/** Every outcome that is a 5xx or that shows tenant A's data to someone else. */
const faults = (outcomes: Outcome[]) =>
  outcomes
    .filter((o) => o.status >= 500 || (!o.who.startsWith("A's") && o.body.includes(MARKER)))
    .map((o) => `${o.who} ${o.op}: ${o.status} ${o.body.slice(0, 300)}`);

const isPlatformPath = (op: Operation) => op.path.startsWith('/v1/platform/');
const tenantOps = () => ops.filter((o) => o.role && !isPlatformPath(o));
/** By path, not by published role: a platform route that forgot `platform: true` is still refused to tenants here. */
const platformOps = () => ops.filter(isPlatformPath);

describe('the OpenAPI document', () => {
  it('names the role of every operation that is not public, and platform-admin exactly under /v1/platform/', () => {
    expect(ops.length).toBeGreaterThan(40);
    const wrong = ops.flatMap((op) => {
      const l = label(op);
      if (!op.role) return PUBLIC.includes(l) ? [] : [`${l}: no x-llmhub-role and not public`];
      if (PUBLIC.includes(l)) return [`${l}: public, yet publishes role ${op.role}`];
      if (![...TENANT_ROLES, PLATFORM_ADMIN].includes(op.role as TenantRole)) return [`${l}: unknown role ${op.role}`];
      if ((op.role === PLATFORM_ADMIN) !== op.path.startsWith('/v1/platform/'))
        return [
          `${l}: ${op.role} on a path ${op.path.startsWith('/v1/platform/') ? 'under' : 'outside'} /v1/platform/`,
        ];
      return [];
    });
    expect(wrong).toEqual([]);
  });
});

describe('without credentials', () => {
  it('every operation but the public ones answers 401; the public ones answer', async () => {
    const outcomes = [];
    for (const op of ops.filter((o) => !PUBLIC.includes(label(o))))
      outcomes.push(await call(op, 'nobody', undefined, true));
    expect(outcomes.filter((o) => o.status !== 401).map((o) => `${o.op}: ${o.status}`)).toEqual([]);
    for (const route of PUBLIC) {
      const res = await p.app.inject({ method: 'GET', url: route.split(' ')[1]! });
      expect({ route, status: res.statusCode < 400 }).toEqual({ route, status: true });
    }
    expect(faults(outcomes)).toEqual([]);
  });
});

describe('operator routes the document does not list', () => {
  it("GET /metrics, which names every tenant's models, answers a platform operator only", async () => {
    const metrics = (key?: string) =>
      p.app.inject({ method: 'GET', url: '/metrics', headers: key ? bearer(key) : {} }).then((r) => r.statusCode);
    expect(await metrics()).toBe(401);
    for (const role of TENANT_ROLES)
      expect({ role, status: await metrics(a.keys[role]) }).toEqual({ role, status: 403 });
    expect(await metrics(p.operatorKey)).toBe(200);
  });
});

describe("tenant A's own members", () => {
  it('get 403 below the role an operation publishes, and pass the role check at it', async () => {
    const outcomes: Outcome[] = [];
    const wrong: string[] = [];
    for (const op of tenantOps()) {
      const needed = op.role as TenantRole;
      for (const role of TENANT_ROLES) {
        const allowed = SATISFIED_BY[needed].includes(role);
        // Besides those refused, only the role itself is called: enough to show the check lets it through.
        if (allowed && role !== needed) continue;
        const o = await call(op, `A's ${role}`, a.keys[role], false);
        outcomes.push(o);
        const refused = label(op) in REFUSED_TO_ALL || !allowed;
        if (refused ? o.status !== 403 : o.status === 401 || o.status === 403)
          wrong.push(`${o.op} needs ${needed}; ${role}: ${o.status} ${o.body.slice(0, 200)}`);
      }
    }
    expect(wrong).toEqual([]);
    expect(faults(outcomes)).toEqual([]);
  });
});

describe('tenants and platform operators', () => {
  it("a platform operator's key gets 403 on every tenant route, and passes the check on platform routes", async () => {
    const outcomes: Outcome[] = [];
    for (const op of tenantOps()) outcomes.push(await call(op, 'operator', p.operatorKey, true));
    expect(outcomes.filter((o) => o.status !== 403).map((o) => `${o.op}: ${o.status}`)).toEqual([]);
    const own: Outcome[] = [];
    for (const op of platformOps()) own.push(await call(op, 'operator', p.operatorKey, false));
    expect(own.filter((o) => o.status === 401 || o.status === 403).map((o) => `${o.op}: ${o.status}`)).toEqual([]);
    expect(faults([...outcomes, ...own])).toEqual([]);
    expect([...waitedFor]).toEqual([...WAITS_FOR_WORKER]);
  });

  it('every member of a tenant, its admin included, gets 403 on every platform route', async () => {
    const outcomes: Outcome[] = [];
    for (const op of platformOps()) {
      for (const role of TENANT_ROLES) outcomes.push(await call(op, `A's ${role}`, a.keys[role], true));
      outcomes.push(await call(op, "B's admin", b.keys.admin, true));
    }
    expect(outcomes.filter((o) => o.status !== 403).map((o) => `${o.who} ${o.op}: ${o.status}`)).toEqual([]);
    expect(faults(outcomes)).toEqual([]);
  });
});

describe("another tenant's admin", () => {
  it("gets 404 on every path naming tenant A's objects, never a 2xx on what names them, and never A's data", async () => {
    const outcomes: Outcome[] = [];
    const wrong: string[] = [];
    // Those that create B's own object of A's name last: B's agent of that name would answer B's reads and runs.
    const own = (op: Operation) => label(op) in OWN_NAMESPACE_OF_CALLER;
    for (const op of [...tenantOps().filter((o) => !own(o)), ...tenantOps().filter(own)]) {
      const o = await call(op, "B's admin", b.keys.admin, true);
      outcomes.push(o);
      // Checked for no 5xx and no leak only, and by the next test: A's objects unchanged.
      if (own(op)) continue;
      if (op.parameters.some((x) => x.in === 'path')) {
        if (o.status !== 404) wrong.push(`${o.op} (path): ${o.status} ${o.body.slice(0, 200)}`);
      } else if (o.bodyNamesA && o.status < 300) {
        // A start naming A's model or agent in its body: any refusal will do, but never a run on A's object.
        wrong.push(`${o.op} (body): ${o.status} ${o.body.slice(0, 200)}`);
      }
    }
    expect(wrong).toEqual([]);
    expect(faults(outcomes)).toEqual([]);
  });

  it("left tenant A's objects as they were", async () => {
    const get = async (url: string) => {
      const res = await p.app.inject({ method: 'GET', url, headers: bearer(a.keys.admin) });
      expect({ url, status: res.statusCode }).toEqual({ url, status: 200 });
      return res.body;
    };
    expect(await get(`/v1/models/${objectsOfA.models}`)).toContain(MARKER);
    expect(await get(`/v1/agents/${objectsOfA.agents}`)).toContain(MARKER);
    expect(await get(`/v1/knowledge/${objectsOfA.knowledge}/documents`)).toContain(MARKER);
    expect(await get(`/v1/mcp-servers/${objectsOfA['mcp-servers']}/tools`)).toContain(MARKER);
    expect(await get('/v1/projects')).toContain(MARKER);
    expect(await get(`/v1/files/${objectsOfA.files}`)).toContain(MARKER);
    expect(JSON.parse(await get(`/v1/batches/${objectsOfA.batches}`))).toMatchObject({
      status: 'validating',
      metadata: { marker: MARKER },
    });
    const keys = JSON.parse(await get('/v1/api-keys')) as { apiKeys: { id: string; revokedAt: string | null }[] };
    expect(keys.apiKeys.find((k) => k.id === objectsOfA['api-keys'])).toMatchObject({ revokedAt: null });
    for (const c of SEEDED_RUNS) {
      const desc = await p.temporal.workflow.getHandle(workflowId(c.kind, a.id, RUN_KEY)).describe();
      expect({ run: c.kind, status: desc.status.name }).toEqual({ run: c.kind, status: 'RUNNING' });
    }
  });
});

describe('suspending a tenant', () => {
  it("is an operator's act: a tenant's admin is refused, and the operator's suspend and resume hold", async () => {
    const c = await p.createTenant('matrix-c');
    const act = (action: 'suspend' | 'resume', key: string) =>
      p.app.inject({ method: 'POST', url: `/v1/platform/tenants/${c.id}/${action}`, headers: bearer(key) });
    const models = () => p.app.inject({ method: 'GET', url: '/v1/models', headers: bearer(c.keys.viewer) });
    expect((await act('suspend', c.keys.admin)).statusCode).toBe(403);
    expect((await act('suspend', b.keys.admin)).statusCode).toBe(403);
    expect((await models()).statusCode).toBe(200);

    const suspended = await act('suspend', p.operatorKey);
    expect(suspended.statusCode).toBe(200);
    expect(suspended.json()).toMatchObject({ id: c.id, suspendedAt: expect.any(String) });
    await eventually('the suspended tenant’s key to be refused', async () => (await models()).statusCode === 401);

    expect((await act('resume', p.operatorKey)).json()).toMatchObject({ id: c.id, suspendedAt: null });
    await eventually('the resumed tenant’s key to work', async () => (await models()).statusCode === 200);
  });
});
