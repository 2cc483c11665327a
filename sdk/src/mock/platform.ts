import { createHash } from 'node:crypto';
import { sdkDocument, type OpenApiDocument, type OperationObject } from './document';
import { MOCK_TIME, overlay, sampleOf } from './sample';

const MOCK_EPOCH_MS = Date.parse(MOCK_TIME);
import { RequestValidator } from './validation';
import { matchOperation } from '../operations';

export interface MockOptions {
  /** The tenant every mock key belongs to (in workflow ids and bucket names); default `demo`. */
  tenant?: string;
}

interface Call {
  params: Record<string, string>;
  query: Record<string, unknown>;
  body: unknown;
  /** The Idempotency-Key sent, or the next deterministic one (`mock-1`, `mock-2`, ...). */
  key: string;
  bytes: Uint8Array;
}

/** What a handler knows of its answer's body, laid over the documented shape of the operation's success status. */
interface Answer {
  body?: unknown;
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

const notFound = (what: string, id: string, field: string) =>
  new Refusal(404, 'not_found', `${what} '${id}' not found`, field);

/** An operation started in the mock: each read moves it one phase on, so a polling loop ends deterministically. */
interface Started {
  body: Record<string, unknown>;
  reads: number;
  extra: Record<string, unknown>;
}

const hash = (...parts: string[]) => createHash('sha256').update(parts.join('\0')).digest('hex');

/**
 * The platform in process, for application tests that need no platform (`createClient({ mock: true })`). It answers
 * every operation of the document the SDK was generated from, after the same request validation (the document's
 * schemas), with bodies of the documented shapes. Models, versions, deployments, fine-tunes, conversions, pipelines,
 * knowledge namespaces, agents and agent runs keep state: ids are the Idempotency-Key or a counter, and an operation
 * moves one phase on at each read (a deploy reads `progressing`, then `promoted`). Nothing runs: no weights are
 * trained, no model answers; inference is the `openai` client's business, against the platform.
 */
export class MockPlatform {
  readonly tenant: string;
  private readonly doc: OpenApiDocument;
  private readonly validator: RequestValidator;
  private counter = 0;
  private readonly models = new Map<string, Record<string, unknown>>();
  private readonly versions = new Map<string, { artifactUri: string; workflowId: string }>();
  private readonly started = new Map<string, Started>();
  private readonly documents = new Map<string, Map<string, string>>();
  private readonly agents = new Map<string, Record<string, unknown>>();

  constructor(options: MockOptions = {}) {
    this.tenant = options.tenant ?? 'demo';
    this.doc = sdkDocument();
    this.validator = new RequestValidator(this.doc);
  }

  /** A fetch: what openapi-fetch (or anything else) sends the mock. */
  readonly fetch = async (request: Request): Promise<Response> => {
    try {
      return await this.handle(request);
    } catch (err) {
      if (!(err instanceof Refusal)) throw err;
      return Response.json(
        { error: { type: err.type, message: err.message, ...(err.field ? { details: { field: err.field } } : {}) } },
        { status: err.status },
      );
    }
  };

  private async handle(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const match = matchOperation(request.method, url.pathname);
    if (!match.op) {
      if (match.allow.length)
        throw new Refusal(405, 'method_not_allowed', `${request.method} is not allowed on ${url.pathname}`);
      throw new Refusal(404, 'not_found', `no route for ${request.method} ${url.pathname}`);
    }
    const template = match.op.path;
    const method = match.op.method.toLowerCase();
    const op = this.doc.paths[template]![method]!;
    if (!/^Bearer \S+$/.test(request.headers.get('authorization') ?? ''))
      throw new Refusal(401, 'unauthorized', 'missing or malformed credentials');
    const query: Record<string, unknown> = {};
    for (const [k, v] of url.searchParams) query[k] = k in query ? [query[k], v].flat() : v;
    const headers = Object.fromEntries(request.headers);
    const bytes = new Uint8Array(await request.arrayBuffer());
    let body: unknown;
    if (op.requestBody?.content['application/json'] && bytes.length) {
      try {
        body = JSON.parse(new TextDecoder().decode(bytes));
      } catch {
        throw new Refusal(400, 'invalid_request', 'body is not valid JSON', 'body');
      }
    }
    if (op.requestBody?.content['application/octet-stream'] && !bytes.length)
      throw new Refusal(400, 'invalid_request', 'body: must be the file content, at least 1 byte(s)', 'body');
    const invalid = this.validator.check(
      template,
      method,
      op,
      { params: match.params, querystring: query, headers },
      body,
    );
    if (invalid) throw new Refusal(400, 'invalid_request', `${invalid.field}: ${invalid.message}`, invalid.field);
    const key = (headers['idempotency-key'] as string | undefined) ?? `mock-${++this.counter}`;
    const call: Call = { params: match.params, query, body, key, bytes };
    const answer = this.answer(`${match.op.method} ${template}`, call);
    return this.respond(op, answer);
  }

  private respond(op: OperationObject, answer: Answer): Response {
    const status = Number(Object.keys(op.responses).find((s) => s.startsWith('2')) ?? 200);
    const schema = op.responses[String(status)]?.content?.['application/json']?.schema;
    if (status === 204 || !schema) return new Response(null, { status });
    return Response.json(overlay(sampleOf(this.doc, schema), answer.body), { status });
  }

  private workflowId(kind: string, key: string): string {
    return `${kind}/${this.tenant}/${key}`;
  }

  private start(kind: string, call: Call, extra: Record<string, unknown> = {}): Started {
    const id = this.workflowId(kind, call.key);
    let s = this.started.get(id);
    if (!s) {
      s = { body: call.body as Record<string, unknown>, reads: 0, extra };
      this.started.set(id, s);
    } else if (JSON.stringify(s.body) !== JSON.stringify(call.body)) {
      throw new Refusal(
        422,
        'idempotency_key_reused',
        `Idempotency-Key '${call.key}' was already used with a different request body`,
      );
    }
    return s;
  }

  private read(kind: string, id: string, what: string): Started {
    const s = this.started.get(this.workflowId(kind, id));
    if (!s) throw notFound(what, id, 'params.id');
    s.reads++;
    return s;
  }

  private requireVersion(modelId: string, version: string | undefined, field: string): string {
    if (!this.models.has(modelId)) throw notFound('model', modelId, `${field}.modelId`);
    const versions = [...this.versions.keys()]
      .filter((k) => k.startsWith(`${modelId}\0`))
      .map((k) => k.split('\0')[1]!);
    const v = version ?? versions.at(-1);
    if (!v || !versions.includes(v)) throw notFound('version', v ?? '', `${field}.version`);
    return v;
  }

  private operationStart(kind: string, idName: string, statusUrl: string, call: Call): Answer {
    return {
      body: {
        [idName]: call.key,
        workflowId: this.workflowId(kind, call.key),
        status: 'running',
        startedAt: MOCK_TIME,
        statusUrl: `${statusUrl}/${call.key}`,
      },
    };
  }

  private answer(route: string, c: Call): Answer {
    const body = (c.body ?? {}) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    const done = (s: Started, n: number) => s.reads >= n;
    switch (route) {
      case 'POST /v1/models/': {
        if (this.models.has(body.id)) throw new Refusal(409, 'conflict', `model '${body.id}' exists`, 'body.id');
        const model = {
          description: '',
          type: null,
          contextLength: null,
          parameterCount: null,
          precision: null,
          resources: null,
          ...body,
          createdAt: MOCK_TIME,
        };
        this.models.set(body.id, model);
        return { body: model };
      }
      case 'GET /v1/models/{modelId}': {
        const model = this.models.get(c.params.modelId!);
        if (!model) throw notFound('model', c.params.modelId!, 'params.modelId');
        return { body: model };
      }
      case 'GET /v1/models/': {
        const data = [...this.models.values()].map((m) => ({ ...m, object: 'model', owned_by: this.tenant }));
        return { body: { object: 'list', data, models: [...this.models.values()], has_more: false, nextCursor: null } };
      }
      case 'POST /v1/models/{modelId}/versions': {
        const modelId = c.params.modelId!;
        if (!this.models.has(modelId)) throw notFound('model', modelId, 'params.modelId');
        const workflowId = this.workflowId('model-version', `${modelId}/${body.version}`);
        if (this.versions.has(`${modelId}\0${body.version}`))
          throw new Refusal(409, 'conflict', `version '${body.version}' exists`, 'body.version');
        this.versions.set(`${modelId}\0${body.version}`, { artifactUri: body.artifactUri, workflowId });
        return {
          body: {
            workflowId,
            modelId,
            version: body.version,
            state: 'registering',
            statusUrl: `/v1/models/${modelId}/versions/${encodeURIComponent(body.version)}`,
          },
        };
      }
      case 'GET /v1/models/{modelId}/versions/{version}': {
        const { modelId, version } = c.params as { modelId: string; version: string };
        const v = this.versions.get(`${modelId}\0${version}`);
        if (!v) throw notFound('version', version, 'params.version');
        return {
          body: {
            modelId,
            version,
            artifactUri: v.artifactUri,
            state: 'ready',
            sizeBytes: 13,
            checksum: hash(v.artifactUri),
            etag: null,
            failureReason: null,
            workflowId: v.workflowId,
            createdAt: MOCK_TIME,
            updatedAt: MOCK_TIME,
          },
        };
      }
      case 'POST /v1/deploy': {
        const version = this.requireVersion(body.modelId, body.version, 'body');
        this.start('rollout', c, { version });
        return this.operationStart('rollout', 'deploymentId', '/v1/deployments', c);
      }
      case 'GET /v1/deployments/{id}': {
        const s = this.read('rollout', c.params.id!, 'deployment');
        const promoted = done(s, 2);
        return {
          body: {
            workflowId: this.workflowId('rollout', c.params.id!),
            workflowStatus: promoted ? 'COMPLETED' : 'RUNNING',
            phase: promoted ? 'promoted' : 'progressing',
            deploymentId: c.params.id,
            modelId: s.body.modelId,
            version: s.extra.version,
            specHash: hash(JSON.stringify(s.body)),
            currentStepIndex: promoted ? 1 : 0,
            stepCount: 1,
            weights: {
              stable: promoted ? s.extra.version : null,
              canary: promoted ? null : s.extra.version,
              canaryWeight: promoted ? 0 : 100,
            },
            pauseReason: null,
            approvals: [],
            analyses: [],
            startedAt: MOCK_EPOCH_MS,
            endpoint: `http://mock.invalid/${s.body.modelId}`,
            failureReason: null,
            rollbackStartedAt: null,
            finishedAt: promoted ? MOCK_EPOCH_MS : null,
          },
        };
      }
      case 'POST /v1/fine-tunes': {
        const version = this.requireVersion(body.baseModel.modelId, body.baseModel.version, 'body.baseModel');
        this.start('fine-tune', c, { version });
        return this.operationStart('fine-tune', 'fineTuneId', '/v1/fine-tunes', c);
      }
      case 'GET /v1/fine-tunes/{id}': {
        const s = this.read('fine-tune', c.params.id!, 'fine-tune');
        const ok = done(s, 2);
        const base = s.body.baseModel as { modelId: string; version: string };
        const output = {
          modelId: (s.body.output as { modelId?: string } | undefined)?.modelId ?? base.modelId,
          version:
            (s.body.output as { version?: string } | undefined)?.version ??
            `${base.version}-ft-${hash(c.params.id!).slice(0, 8)}`,
        };
        if (ok && !this.versions.has(`${output.modelId}\0${output.version}`))
          this.versions.set(`${output.modelId}\0${output.version}`, {
            artifactUri: `s3://llmhub-t-${this.tenant}/fine-tunes/${c.params.id}/output/model.safetensors`,
            workflowId: this.workflowId('fine-tune', c.params.id!),
          });
        return {
          body: {
            workflowId: this.workflowId('fine-tune', c.params.id!),
            workflowStatus: ok ? 'COMPLETED' : 'RUNNING',
            phase: ok ? 'succeeded' : 'running',
            fineTuneId: c.params.id,
            base,
            output,
            method: s.body.method,
            gpuCount: (s.body.resources as { gpuCount: number }).gpuCount,
            job: null,
            progress: null,
            resumptions: [],
            result: ok
              ? {
                  ...output,
                  artifactUri: this.versions.get(`${output.modelId}\0${output.version}`)!.artifactUri,
                  checksum: hash(c.params.id!),
                }
              : null,
            failureReason: null,
            queue: null,
          },
        };
      }
      case 'POST /v1/conversions': {
        const version = this.requireVersion(body.modelId, body.version, 'body');
        this.start('conversion', c, { version });
        return {
          body: {
            conversionId: c.key,
            workflowId: this.workflowId('conversion', c.key),
            memoized: false,
            state: 'running',
            statusUrl: `/v1/conversions/${c.key}`,
          },
        };
      }
      case 'GET /v1/conversions/{id}': {
        const s = this.read('conversion', c.params.id!, 'conversion');
        const ok = done(s, 2);
        const targets = s.body.targets as string[];
        return {
          body: {
            conversionId: c.params.id,
            workflowId: this.workflowId('conversion', c.params.id!),
            modelId: s.body.modelId,
            version: s.extra.version,
            memoKey: hash(JSON.stringify(s.body)).slice(0, 32),
            toolchainVersion: 'mock',
            options: { targets, precision: s.body.precision ?? 'fp16', validation: {}, profile: {} },
            state: ok ? 'succeeded' : 'running',
            targets: ok ? targets.map((target) => ({ target, status: 'published' })) : [],
            tritonRepositoryUri: null,
            error: null,
            createdAt: MOCK_TIME,
            updatedAt: MOCK_TIME,
            artifacts: [],
          },
        };
      }
      case 'POST /v1/pipelines': {
        this.requireVersion(
          body.fineTune.baseModel.modelId,
          body.fineTune.baseModel.version,
          'body.fineTune.baseModel',
        );
        this.start('pipeline', c, { approval: null });
        return this.operationStart('pipeline', 'pipelineId', '/v1/pipelines', c);
      }
      case 'GET /v1/pipelines/{id}':
      case 'POST /v1/pipelines/{id}/approvals': {
        const s = this.read('pipeline', c.params.id!, 'pipeline');
        const gated = s.body.approvalBeforeRollout === true;
        if (route.startsWith('POST')) {
          if (!gated || s.extra.approval) throw new Refusal(409, 'conflict', 'the pipeline is not awaiting approval');
          s.extra.approval = { decision: body.decision, by: 'mock', reason: body.reason ?? null, at: MOCK_EPOCH_MS };
        }
        const approval = s.extra.approval as { decision: string; by: string; reason: string | null } | null;
        // As the workflow: fine-tune (and conversion), then the gate if asked for; a denial fails the run.
        const stage = approval
          ? approval.decision === 'deny'
            ? 'failed'
            : 'succeeded'
          : !done(s, 2)
            ? 'fine_tune'
            : gated
              ? 'awaiting_approval'
              : 'succeeded';
        const failureReason =
          stage === 'failed'
            ? `the rollout was denied by ${approval!.by}${approval!.reason ? `: ${approval!.reason}` : ''}`
            : null;
        return {
          body: {
            workflowId: this.workflowId('pipeline', c.params.id!),
            workflowStatus: stage === 'succeeded' ? 'COMPLETED' : stage === 'failed' ? 'FAILED' : 'RUNNING',
            pipelineId: c.params.id,
            stage,
            awaitingApproval: stage === 'awaiting_approval',
            approval,
            failureReason,
            conversion: null,
          },
        };
      }
      case 'POST /v1/knowledge/{namespace}/files': {
        const name = String(c.query.name);
        const docs = this.documents.get(c.params.namespace!) ?? new Map<string, string>();
        this.documents.set(c.params.namespace!, docs);
        docs.set(name, new TextDecoder().decode(c.bytes));
        return {
          body: {
            documentId: name,
            uri: `s3://llmhub-t-${this.tenant}/knowledge/${c.params.namespace}/${name}`,
            sizeBytes: c.bytes.length,
          },
        };
      }
      case 'POST /v1/knowledge/{namespace}/ingestions': {
        this.start('ingestion', { ...c, key: `${c.params.namespace}/${c.key}` });
        return {
          body: {
            workflowId: this.workflowId('ingestion', `${c.params.namespace}/${c.key}`),
            ingestionId: c.key,
            statusUrl: `/v1/knowledge/${c.params.namespace}/ingestions/${c.key}`,
          },
        };
      }
      case 'GET /v1/knowledge/{namespace}/ingestions/{id}': {
        const id = `${c.params.namespace}/${c.params.id}`;
        const s = this.started.get(this.workflowId('ingestion', id));
        if (!s) throw notFound('ingestion', c.params.id!, 'params.id');
        s.reads++;
        const total = this.documents.get(c.params.namespace!)?.size ?? 0;
        const ok = done(s, 2);
        return {
          body: {
            workflowId: this.workflowId('ingestion', id),
            status: ok ? 'COMPLETED' : 'RUNNING',
            phase: ok ? 'completed' : 'indexing',
            failures: [],
            total,
            done: ok ? total : 0,
            skippedUnchanged: 0,
            failed: 0,
            chunksWritten: ok ? total : 0,
            removed: 0,
          },
        };
      }
      case 'POST /v1/knowledge/{namespace}/search':
      case 'POST /v1/knowledge/{namespace}/chat': {
        const docs = this.documents.get(c.params.namespace!);
        if (!docs) throw notFound('namespace', c.params.namespace!, 'params.namespace');
        const words = String(body.query ?? body.question)
          .toLowerCase()
          .split(/\W+/)
          .filter(Boolean);
        const hits = [...docs]
          .map(([documentId, text]) => ({
            documentId,
            text,
            score: words.filter((w) => text.toLowerCase().includes(w)).length / Math.max(1, words.length),
          }))
          .sort((a, b) => b.score - a.score || a.documentId.localeCompare(b.documentId))
          .slice(0, body.topK ?? 5)
          .map((h) => ({
            ...h,
            chunkIndex: 0,
            source: {
              uri: `s3://llmhub-t-${this.tenant}/knowledge/${c.params.namespace}/${h.documentId}`,
              page: null,
              heading: null,
              start: 0,
              end: h.text.length,
            },
          }));
        if (route.endsWith('/search')) return { body: { hits } };
        return {
          body: {
            answer: hits.length ? `${hits[0]!.text.slice(0, 200)} [1]` : 'no document answers this',
            model: body.model,
            citations: hits.map((h, i) => ({ ...h, index: i + 1 })),
          },
        };
      }
      case 'POST /v1/mcp-servers/': {
        const server = {
          id: body.id,
          transport: body.url ? 'http' : 'stdio',
          catalog: body.catalog ?? null,
          url: body.url ?? null,
          createdAt: MOCK_TIME,
          tools: [],
        };
        return { body: server };
      }
      case 'PUT /v1/agents/{id}': {
        const agent = { stepLimit: 10, approvalTimeoutSeconds: 3600, ...body, id: c.params.id };
        this.agents.set(c.params.id!, agent);
        return { body: agent };
      }
      case 'GET /v1/agents/{id}': {
        const agent = this.agents.get(c.params.id!);
        if (!agent) throw notFound('agent', c.params.id!, 'params.id');
        return { body: agent };
      }
      case 'POST /v1/agent-runs/': {
        const agent = this.agents.get(body.agentId);
        if (!agent) throw notFound('agent', body.agentId, 'body.agentId');
        this.start('agent-run', c, { agent, decision: null });
        return this.operationStart('agent-run', 'runId', '/v1/agent-runs', c);
      }
      case 'GET /v1/agent-runs/{id}':
      case 'POST /v1/agent-runs/{id}/approvals':
        return { body: this.agentRun(route, c, body) };
      default:
        return {};
    }
  }

  /**
   * An agent run asks for its agent's first tool (the mock's model always does) and waits for a person; approved or
   * denied, it then completes with an answer.
   */
  private agentRun(route: string, c: Call, body: Record<string, unknown>): Record<string, unknown> {
    const s = this.read('agent-run', c.params.id!, 'agent run');
    const agent = s.extra.agent as { tools: string[] };
    const tool = agent.tools[0];
    const actionHash = hash(c.params.id!, tool ?? '');
    if (route.startsWith('POST')) {
      if (!tool || s.extra.decision) throw new Refusal(409, 'conflict', 'the run is not awaiting approval');
      if (body.actionHash !== actionHash) throw new Refusal(409, 'conflict', 'stale action hash', 'body.actionHash');
      s.extra.decision = body.decision;
    }
    const waiting = tool && !s.extra.decision;
    const input = String(s.body.input);
    return {
      workflowId: this.workflowId('agent-run', c.params.id!),
      workflowStatus: waiting ? 'RUNNING' : 'COMPLETED',
      messages: [{ role: 'user', content: input }],
      toolCalls: [],
      step: waiting ? 0 : 1,
      runId: c.params.id,
      agentId: s.body.agentId,
      phase: waiting ? 'awaiting_approval' : 'completed',
      pending: waiting
        ? { toolCallId: 'call-1', tool, arguments: {}, risk: 'write', actionHash, deadline: MOCK_EPOCH_MS }
        : null,
      answer: waiting ? null : `mock answer to: ${input}`,
      failureReason: null,
      startedAt: MOCK_EPOCH_MS,
      finishedAt: waiting ? null : MOCK_EPOCH_MS,
    };
  }
}
