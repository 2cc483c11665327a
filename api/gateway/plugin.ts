import { performance } from 'node:perf_hooks';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type TProperties, type TSchema } from '@sinclair/typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Pool } from 'pg';
import { ATTR_URL_FULL } from '@opentelemetry/semantic-conventions';
import { EgressPolicy } from '../../common/egress';
import { BadRequestError, ForbiddenError } from '../../common/errors';
import { isStorableText } from '../../common/storable-text';
import { nestsTooDeep, TOO_DEEP } from '../json-depth';
import { encodedBodyError } from '../content-encoding';
import { ALWAYS_HEADERS } from '../response-headers';
import type { AuditStore } from '../../common/store/audit';
import { BudgetStore } from '../../common/store/budgets';
import { GatewayMetricsStore } from '../../common/store/gateway-metrics';
import { LimitStore } from '../../common/store/limits';
import { RoutingStore } from '../../common/store/routing';
import { UsageStore } from '../../common/store/usage';
import { requireRole } from '../plugins/auth';
import { withClientSpan } from '../plugins/tracing';
import { ServedVersionStore } from '../../common/store/served-versions';
import { BudgetAlertSender } from './alert-sender';
import { ColdStarts } from './cold-start';
import {
  BudgetExceededError,
  ColdStartError,
  ModelNotFoundError,
  openAiError,
  RateLimitedError,
  toOpenAiError,
} from './errors';
import { batchShareOf } from './batch-share';
import { SliceLimiter, type Reservation } from './limiter';
import { GatewayMeter, type Outcome } from './meter';
import { LatencyBoard, pickByStrategy, type GatewayProviders } from './providers';
import {
  pickUpstream,
  RouteTable,
  ROUTING_STRATEGIES,
  type CompiledRoute,
  type RoutingStrategy,
  type Upstream,
} from './route-table';
import type { GatewaySettings } from './settings';
import {
  Cancellation,
  classify,
  UpstreamError,
  UpstreamPool,
  type FailureClass,
  type StreamResponse,
  type WholeResponse,
} from './upstream';
import { StreamUsage, usageOfBody, type TokenUsage } from './usage-scan';

declare module 'fastify' {
  interface FastifyRequest {
    /** The request body's bytes as received: the gateway forwards these, never a re-serialisation. */
    rawBody?: Buffer;
  }
}

const GenerationBody = Type.Object(
  {
    model: Type.String({ minLength: 1 }),
    stream: Type.Optional(Type.Boolean()),
    max_tokens: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()])),
    max_completion_tokens: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()])),
    user: Type.Optional(Type.String()),
  },
  { additionalProperties: true },
);
const ChatBody = Type.Composite(
  [
    GenerationBody,
    Type.Object({
      messages: Type.Array(Type.Object({ role: Type.String() }, { additionalProperties: true }), { minItems: 1 }),
    }),
  ],
  {
    additionalProperties: true,
    examples: [{ model: 'chat', messages: [{ role: 'user', content: 'Say hello' }] }],
  },
);
const CompletionBody = Type.Composite([GenerationBody, Type.Object({ prompt: Type.Unknown() })], {
  additionalProperties: true,
  examples: [{ model: 'chat', prompt: 'Say hello', max_tokens: 16 }],
});
const EmbeddingBody = Type.Object(
  { model: Type.String({ minLength: 1 }), input: Type.Unknown(), user: Type.Optional(Type.String()) },
  { additionalProperties: true, examples: [{ model: 'chat', input: 'hello' }] },
);
const GatewayHeaders = Type.Object({
  'x-routing-strategy': Type.Optional(
    Type.Union(
      ROUTING_STRATEGIES.map((s) => Type.Literal(s)),
      {
        description:
          "Pin stable or canary, split sticky per user (ab_test), or pick among the model's stable, canary and fallbacks the cheapest (cost) or the lowest recent latency (latency) whose circuit is closed",
      },
    ),
  ),
  'x-project-id': Type.Optional(Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' })),
  'x-tenant-id': Type.Optional(Type.String()),
  'x-trace-id': Type.Optional(Type.String()),
});
const OpenAiErrorSchema = Type.Object({
  error: Type.Object({
    message: Type.String(),
    type: Type.String(),
    param: Type.Union([Type.String(), Type.Null()]),
    code: Type.Union([Type.String(), Type.Null()]),
  }),
});
// The model server's answers, passed through byte for byte: what OpenAI's shapes promise, and whatever else it adds.
const Open = { additionalProperties: true };
const Usage = Type.Object(
  { prompt_tokens: Type.Integer(), completion_tokens: Type.Optional(Type.Integer()), total_tokens: Type.Integer() },
  Open,
);
const Answer = <T extends TProperties>(object: string, choice: T) =>
  Type.Object(
    {
      id: Type.String(),
      object: Type.Literal(object),
      created: Type.Integer(),
      model: Type.String(),
      choices: Type.Array(
        Type.Object(
          { index: Type.Integer(), finish_reason: Type.Union([Type.String(), Type.Null()]), ...choice },
          Open,
        ),
      ),
      usage: Type.Optional(Usage),
    },
    Open,
  );
const ChatCompletion = Answer('chat.completion', {
  message: Type.Object({ role: Type.String(), content: Type.Union([Type.String(), Type.Null()]) }, Open),
});
const TextCompletion = Answer('text_completion', { text: Type.String() });
const Embeddings = Type.Object(
  {
    object: Type.Literal('list'),
    data: Type.Array(
      Type.Object(
        {
          object: Type.Literal('embedding'),
          index: Type.Integer(),
          embedding: Type.Union([Type.Array(Type.Number()), Type.String({ description: 'base64 float32' })]),
        },
        Open,
      ),
    ),
    model: Type.String(),
    usage: Usage,
  },
  Open,
);
/** One server-sent event as clients (and schemathesis) read it: the chunk's JSON, or `[DONE]`, as its data. */
const EventStream = Type.Object(
  { event: Type.Optional(Type.String()), data: Type.String() },
  {
    description:
      'stream: true — server-sent events, one `data: {chunk}` per chunk, then `data: [DONE]`; a stream that breaks off after its start ends with an OpenAI error event',
  },
);
/** 200 in the operation's content types; the stream's only where the operation streams. */
const answered = (json: TSchema, streams: boolean) => ({
  description: streams ? 'The answer (application/json), or its stream when stream is true' : 'The answer',
  content: {
    'application/json': { schema: json },
    ...(streams ? { 'text/event-stream': { schema: EventStream } } : {}),
  },
});

type InferenceBody = {
  model: string;
  stream?: boolean;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  user?: string;
};
const DEFAULT_PROJECT = 'default';

/** The status a caller gets for an upstream failure before any byte of the answer was sent. */
const STATUS_OF: Record<FailureClass, number> = {
  timeout_connect: 504,
  timeout_first_byte: 504,
  timeout_idle: 504,
  connect: 503,
  circuit_open: 503,
  upstream_5xx: 502,
  stream_broken: 502,
};

/**
 * The OpenAI-compatible inference gateway: POST /v1/chat/completions, /v1/completions and /v1/embeddings
 * (GET /v1/models is the registry's route) plus Prometheus /metrics (platform operators only). Bodies pass through byte for byte; streams
 * are forwarded chunk by chunk. Nothing on the request path touches the database: keys, routes and limits are
 * in memory, limit slices are leased in the background of a request only when a replica's slice runs out, and
 * usage and metrics are flushed in batches.
 */
export const gatewayPlugin: FastifyPluginAsyncTypebox<{
  db: Pool;
  settings: GatewaySettings;
  audit: Pick<AuditStore, 'prune'>;
  auditRetentionMs: number;
  /** Where budget alert webhooks may be reached; default: no internal address. */
  webhookEgress?: EgressPolicy;
  /** External providers and the egress check their calls go through; none: deployed versions only. */
  providers?: GatewayProviders & { egress: EgressPolicy };
}> = async (app, { db, settings: s, audit, auditRetentionMs, webhookEgress, providers }) => {
  const table = new RouteTable({
    db,
    store: new RoutingStore(db),
    logger: app.log,
    refreshMs: s.refreshMs,
    onKeyChanged: (id) => app.apiKeys.evict(id),
    onTenantChanged: (id) => {
      app.apiKeys.clear();
      app.tenantStates.deleteWhere((tenant) => tenant === id);
    },
    ...(providers ? { providers } : {}),
  });
  const upstreams = new UpstreamPool(
    {
      connections: s.upstreamConnections,
      connectTimeoutMs: s.connectTimeoutMs,
      firstByteTimeoutMs: s.firstByteTimeoutMs,
      idleTimeoutMs: s.idleTimeoutMs,
      breakerFailures: s.breakerFailures,
      breakerCooldownMs: s.breakerCooldownMs,
    },
    providers?.egress.dispatcher,
  );
  const latency = new LatencyBoard();
  const limits = new LimitStore(db);
  const limiter = new SliceLimiter(limits, {
    requestSlice: s.requestSlice,
    tokenSlice: s.tokenSlice,
    budgetSlice: s.budgetSlice,
    leaseIdleMs: s.leaseIdleMs,
    logger: app.log,
  });
  const budgets = new BudgetStore(db);
  const egress = webhookEgress ?? new EgressPolicy();
  const alerts = new BudgetAlertSender({
    store: budgets,
    egress,
    ...(providers ? { vault: providers.vault } : {}),
    pollMs: s.alertPollMs,
    retryMs: s.alertRetryMs,
    logger: app.log,
  });
  /** Tenants whose alerts could not be decided last time: asked again with the next batch. */
  let undecided = new Set<string>();
  const meter = new GatewayMeter({
    metrics: new GatewayMetricsStore(db),
    usage: new UsageStore(db),
    onUsageStored: async (rows) => {
      const tenants = undecided;
      for (const r of rows) if (table.hasBudget(r.tenantId)) tenants.add(r.tenantId);
      if (tenants.size === 0) return;
      undecided = new Set();
      try {
        if ((await budgets.decideAlerts([...tenants])) > 0) alerts.wake();
      } catch (err) {
        for (const t of tenants) undecided.add(t);
        app.log.warn({ err }, 'deciding budget alerts failed; will retry with the next usage');
      }
    },
    limits,
    flushMs: s.metricsFlushMs,
    retentionMs: s.metricsRetentionMs,
    audit,
    auditRetentionMs,
    logger: app.log,
  });
  const coldStarts = new ColdStarts({
    table,
    store: new ServedVersionStore(db),
    settings: s,
    logger: app.log,
  });
  await table.start();
  app.addHook('onClose', async () => {
    await table.close();
    await Promise.all([limiter.close(), meter.close()]);
    await alerts.close();
    if (!webhookEgress) await egress.close();
    await upstreams.close();
  });

  app.decorateRequest('rawBody', undefined);
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser(
    'application/json',
    { parseAs: 'buffer', bodyLimit: s.bodyLimitBytes },
    (request, body, done) => {
      const encoded = encodedBodyError(request.headers);
      if (encoded) return done(encoded, undefined);
      request.rawBody = body as Buffer;
      try {
        const parsed: unknown = JSON.parse((body as Buffer).toString('utf8'));
        if (nestsTooDeep(parsed, body as Buffer))
          return done(Object.assign(new Error(`the request body ${TOO_DEEP}`), { statusCode: 400 }), undefined);
        done(null, parsed);
      } catch (err) {
        done(
          Object.assign(new Error(`request body is not valid JSON: ${(err as Error).message}`), { statusCode: 400 }),
          undefined,
        );
      }
    },
  );
  app.setErrorHandler((err, request, reply) => {
    const { status, body } = toOpenAiError(err as Error);
    if (status >= 500) request.log.error({ err }, 'inference request failed');
    if (err instanceof RateLimitedError || err instanceof ColdStartError)
      reply.header('retry-after', String(err.retryAfterSeconds));
    return reply.status(status).send(body);
  });

  // Operators only: the metrics name every tenant's models, versions and traffic, and they share the API's listener.
  app.get('/metrics', { config: { platform: true }, schema: { hide: true } }, async (_request, reply) =>
    reply.type(meter.registry.contentType).send(await meter.metrics()),
  );

  const routeOptions = (
    summary: string,
    body: typeof ChatBody | typeof CompletionBody | typeof EmbeddingBody,
    ok: ReturnType<typeof answered>,
  ) => ({
    bodyLimit: s.bodyLimitBytes,
    preHandler: requireRole('developer'),
    // A 405 on these paths (answered by the not-found handler) is in OpenAI's shape too.
    config: { auditBuffered: true, renderError: toOpenAiError, serviceCredential: true },
    schema: {
      tags: ['inference'],
      summary,
      headers: GatewayHeaders,
      body,
      // 404: an unknown model; 429: a limit (Retry-After); 502/503/504: the model server failed, could not be reached or
      // was too slow before its first byte; other 4xx of the model server pass through in OpenAI's shape.
      response: Object.fromEntries([
        [200, ok],
        ...[400, 401, 403, 404, 405, 413, 415, 422, 429, 502, 503, 504].map((c) => [c, OpenAiErrorSchema]),
      ]),
    },
  });
  app.post(
    '/v1/chat/completions',
    routeOptions('Chat completion (OpenAI-compatible; stream: true for SSE)', ChatBody, answered(ChatCompletion, true)),
    (req, reply) => proxy(req, reply, '/chat/completions'),
  );
  app.post(
    '/v1/completions',
    routeOptions(
      'Text completion (OpenAI-compatible; stream: true for SSE)',
      CompletionBody,
      answered(TextCompletion, true),
    ),
    (req, reply) => proxy(req, reply, '/completions'),
  );
  app.post(
    '/v1/embeddings',
    routeOptions('Embeddings (OpenAI-compatible)', EmbeddingBody, answered(Embeddings, false)),
    (req, reply) => proxy(req, reply, '/embeddings'),
  );

  async function proxy(request: FastifyRequest, reply: FastifyReply, path: string): Promise<FastifyReply> {
    const started = performance.now();
    const principal = request.principal!;
    const tenantId = principal.tenantId;
    const body = request.body as InferenceBody;
    const raw = request.rawBody!;
    // Stored with the call (audit, usage): PostgreSQL's text takes no NUL, and an unpaired surrogate comes back changed.
    if (!isStorableText(body.model))
      throw new BadRequestError('body.model holds a NUL character or an unpaired UTF-16 surrogate', 'body.model');
    request.auditModel = { model: body.model };
    const projectId = (request.headers['x-project-id'] as string | undefined) ?? DEFAULT_PROJECT;
    if (projectId !== DEFAULT_PROJECT && !table.hasProject(tenantId, projectId)) {
      throw new ForbiddenError(`project '${projectId}' does not belong to tenant '${tenantId}'`);
    }
    let route = table.route(tenantId, body.model);
    if (!route) throw new ModelNotFoundError(body.model);
    const strategy = (request.headers['x-routing-strategy'] as RoutingStrategy | undefined) ?? 'weighted';

    // Reserve before the call: the prompt (estimated at 4 bytes a token, an over-estimate for JSON) plus the most it may generate.
    const promptEstimate = Math.ceil(raw.length / 4);
    const maxOutput =
      path === '/embeddings' ? 0 : (body.max_tokens ?? body.max_completion_tokens ?? s.defaultMaxTokens);
    const pick = (r: CompiledRoute): Upstream =>
      strategy === 'cost' || strategy === 'latency'
        ? pickByStrategy(
            equivalents(r),
            strategy,
            (u) => upstreams.breaker(u).state === 'closed',
            latency,
            { prompt: promptEstimate, completion: maxOutput },
            (u) => table.priceOf(tenantId, body.model, u.version),
          )
        : pickUpstream(r, strategy, body.user ?? principal.subject);
    let chosen = pick(route);
    /** Holds the request while `u` is brought back, then picks `route` and `chosen` again; 503 past the queue or the wait. */
    const waitForStart = async (u: Upstream): Promise<void> => {
      const held = await coldStarts.hold({ tenantId, modelId: body.model, version: u.version }, u);
      if (held !== 'ready')
        throw new ColdStartError(
          held === 'full'
            ? `model '${body.model}' version '${u.version}' is starting and too many requests wait for it; retry later`
            : `model '${body.model}' version '${u.version}' did not start within ${s.coldWaitMs} ms; retry later`,
          coldStarts.retryAfterSeconds,
        );
      route = table.route(tenantId, body.model);
      if (!route) throw new ModelNotFoundError(body.model);
      chosen = pick(route);
    };
    if (chosen.serving?.cold) await waitForStart(chosen);
    const price = table.priceOf(tenantId, body.model, chosen.version);
    const rules = table.limitsFor(tenantId, principal.subject, projectId);
    if (principal.batchId) rules.push(...batchShareOf(rules));
    let reservation: Reservation | undefined;
    if (rules.length) {
      // A budget reserves the most the request can cost, as a token limit reserves the most it can use.
      const cost = price && {
        currency: price.currency,
        micros: Math.ceil(promptEstimate * price.inputPerMillion + maxOutput * price.outputPerMillion),
      };
      const admitted = limiter.admit(rules, promptEstimate + maxOutput, cost);
      const admission = admitted instanceof Promise ? await admitted : admitted;
      if (!admission.ok) {
        meter.limited({ tenantId, modelId: body.model, version: chosen.version }, admission.scope);
        if (admission.scope === 'budget') throw new BudgetExceededError(admission.reason, admission.retryAfterSeconds);
        throw new RateLimitedError(admission.reason, admission.retryAfterSeconds);
      }
      reservation = admission.reservation;
    }

    const caller = new Cancellation();
    const out = reply.raw;
    out.on('close', () => {
      if (!out.writableFinished) caller.cancel();
    });
    const base = { tenantId, projectId, subject: principal.subject, modelId: body.model };
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'x-trace-id': request.id,
      'x-tenant-id': tenantId,
      'x-project-id': projectId,
    };
    // Embeddings have no stream form: a `stream` in their body is passed on and answered whole.
    const stream = body.stream === true && path !== '/embeddings';
    const finish = (
      o: Omit<Outcome, keyof typeof base | keyof TokenUsage | 'latencyMs' | 'costMicros' | 'currency'>,
      usage: TokenUsage,
    ) => {
      const p = o.version === chosen.version ? price : table.priceOf(tenantId, body.model, o.version);
      const costMicros = p ? usage.promptTokens * p.inputPerMillion + usage.completionTokens * p.outputPerMillion : 0;
      reservation?.settle(usage.promptTokens + usage.completionTokens, costMicros);
      // Written out, not spread: one object of one shape per request.
      meter.record({
        tenantId,
        projectId,
        subject: principal.subject,
        modelId: body.model,
        version: o.version,
        status: o.status,
        errorClass: o.errorClass,
        ttftMs: o.ttftMs,
        promptTokens: usage.promptTokens,
        completionTokens: usage.completionTokens,
        latencyMs: performance.now() - started,
        costMicros: p ? costMicros : undefined,
        currency: p?.currency,
      });
    };
    /** The audit row of an answer written past Fastify (hijacked), once it has ended. */
    const audited = (statusCode: number, version: string, usage: TokenUsage, bytesSent: number, errorClass?: string) =>
      app.auditEnded(request, reply, {
        statusCode,
        bytesSent,
        disconnected: caller.cancelled,
        model: body.model,
        modelVersion: version,
        ...usage,
        errorClass,
      });

    // The chosen target, then stable, then the fallbacks in their declared order: each tried once.
    const orderOf = (r: CompiledRoute, first: Upstream): Upstream[] =>
      r.fallbacks.length === 0
        ? first === r.stable
          ? [first]
          : [first, r.stable]
        : [...new Set([first, r.stable, ...r.fallbacks])];
    let order = orderOf(route, chosen);
    let target = chosen;
    let answer: Attempt;
    let woken = false;
    for (let i = 0; ; target = order[++i]!) {
      const next = order[i + 1];
      try {
        const sent = performance.now();
        answer = await attempt(target, path, headers, raw, stream, caller);
        // Only routes with a choice to make keep latency; a lone deployed version's hot path is as it was.
        if (order.length > 1 || route.canary) latency.observe(target, performance.now() - sent);
        // A provider's (or a server's) rate limit before any byte is one the next target may not have. A provider
        // refusing the platform's credential is never passed on: its message may quote part of the key.
        const refused = answer.kind === 'whole' && target.provider && [401, 403].includes(answer.statusCode);
        if (answer.kind === 'whole' && ((next && answer.statusCode === 429) || refused)) {
          meter.observe({
            ...base,
            version: target.version,
            status: answer.statusCode,
            errorClass: refused ? 'provider_auth' : 'upstream_429',
            latencyMs: performance.now() - started,
            ...NO_USAGE,
          });
          request.log.warn({ version: target.version, status: answer.statusCode }, 'upstream refused the call');
          if (next) continue;
          reservation?.settle(0);
          request.auditModel = { model: body.model, modelVersion: target.version };
          reply.header('x-llmhub-model-version', target.version);
          return reply
            .status(502)
            .send(openAiError(502, `model '${body.model}': ${target.version} refused its credential`, 'provider_auth'));
        }
        break;
      } catch (err) {
        if (caller.cancelled || !(err instanceof UpstreamError)) {
          finish({ version: target.version, status: caller.cancelled ? 499 : 500 }, NO_USAGE);
          if (!caller.cancelled) throw err;
          // The caller has gone: there is no one to answer.
          reply.hijack();
          audited(499, target.version, NO_USAGE, 0);
          return reply;
        }
        const failure = err;
        const status = STATUS_OF[failure.failure];
        // Counted against the version that failed, so the rollout analysis sees a failing canary even when the caller did not.
        meter.observe({
          ...base,
          version: target.version,
          status,
          errorClass: failure.failure,
          latencyMs: performance.now() - started,
          ...NO_USAGE,
        });
        // The stable version's server is gone (a restart, a scale to zero in flight): bring it back once, then start
        // over from the target chosen on the route as it is then (the loop's step takes `i` from -1 to 0).
        const gone = failure.failure === 'connect' || failure.failure === 'circuit_open';
        if (gone && target.serving && !woken && target === route!.stable) {
          woken = true;
          try {
            await waitForStart(target);
          } catch (e) {
            reservation?.settle(0);
            throw e;
          }
          order = orderOf(route!, chosen);
          i = -1;
          continue;
        }
        if (next) {
          request.log.warn(
            { version: target.version, failure: failure.failure, next: next.version },
            'upstream failed before the first byte; falling back',
          );
          continue;
        }
        reservation?.settle(0);
        request.auditModel = { model: body.model, modelVersion: target.version };
        reply.header('x-llmhub-model-version', target.version);
        return reply
          .status(status)
          .send(
            openAiError(
              status,
              `model '${body.model}' version '${target.version}': ${failure.message}`,
              failure.failure,
            ),
          );
      }
    }

    const served = target;
    reply.hijack();
    const responseHeaders: Record<string, string | number> = {
      ...ALWAYS_HEADERS,
      'x-trace-id': request.id,
      'x-llmhub-model-version': served.version,
    };
    if (answer.kind === 'whole') {
      const ok = answer.statusCode < 400;
      const payload = ok ? answer.body : asOpenAiError(answer.statusCode, answer.body);
      out.writeHead(answer.statusCode, {
        ...responseHeaders,
        'content-type': ok ? (answer.contentType ?? 'application/json') : 'application/json',
        'content-length': payload.length,
      });
      out.end(payload);
      const used = ok ? (usageOfBody(answer.body) ?? { promptTokens: promptEstimate, completionTokens: 0 }) : NO_USAGE;
      finish({ version: served.version, status: answer.statusCode }, used);
      audited(answer.statusCode, served.version, used, payload.length);
      return reply;
    }

    out.writeHead(200, {
      ...responseHeaders,
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no',
    });
    const ttftMs = performance.now() - started;
    const usage = new StreamUsage();
    const { relay } = answer;
    const resume = () => relay.resume();
    out.on('drain', resume);
    let errorClass: string | undefined;
    let bytesSent = 0;
    try {
      await relay.forward((chunk) => {
        usage.push(chunk);
        bytesSent += chunk.length;
        return out.write(chunk);
      });
      out.end();
    } catch (err) {
      if (!caller.cancelled) {
        const failure = classify(err, 'body');
        errorClass = failure.failure;
        upstreams.breaker(served).failure();
        request.log.warn({ err, version: served.version }, 'upstream stream failed mid-way');
        const event = openAiError(
          502,
          `the model server's stream broke off: ${failure.message}`,
          'upstream_stream_error',
        );
        const tail = `data: ${JSON.stringify(event)}\n\n`;
        bytesSent += Buffer.byteLength(tail);
        out.end(tail);
      }
    }
    out.off('drain', resume);
    const status = caller.cancelled ? 499 : errorClass ? 502 : 200;
    const used = usage.result(promptEstimate);
    finish({ version: served.version, status, errorClass, ttftMs }, used);
    audited(200, served.version, used, bytesSent, errorClass);
    return reply;
  }

  type Attempt = WholeResponse | StreamResponse;

  /**
   * One upstream call up to its first byte of body: a whole answer for non-streaming calls and errors, the first
   * chunk for a stream. A failure anywhere before that can still fall back, since the caller has seen nothing.
   */
  function attempt(
    u: Upstream,
    path: string,
    headers: Record<string, string>,
    raw: Buffer,
    stream: boolean,
    caller: Cancellation,
  ): Promise<Attempt> {
    // An external provider gets its own credential and headers, none of the platform's tenant or project ids, and
    // the body with its own model name (the only re-serialisation: deployed versions get the caller's bytes).
    const sent = u.provider ? { 'content-type': 'application/json', ...u.provider.headers } : headers;
    const payload = u.provider ? withModel(raw, u.provider.model) : raw;
    // The span covers the call up to the whole answer or a stream's first chunk, the part a fallback can retry.
    return withClientSpan(
      `POST ${path}`,
      () => ({ [ATTR_URL_FULL]: `${u.origin}${u.basePath}${path}`, 'llmhub.model_version': u.version }),
      sent,
      (traced) => upstreams.call(u, path, traced, payload, caller, stream),
    );
  }
};

const NO_USAGE: TokenUsage = { promptTokens: 0, completionTokens: 0 };

/** A route's equivalent targets (the cost and latency strategies choose among them), each once. */
const equivalents = (route: CompiledRoute): Upstream[] => [
  ...new Set([route.stable, ...(route.canary ? [route.canary] : []), ...route.fallbacks]),
];

function withModel(raw: Buffer, model: string): Buffer {
  return Buffer.from(JSON.stringify({ ...(JSON.parse(raw.toString('utf8')) as object), model }));
}

/** A model server's 4xx passes through when it is OpenAI-shaped; anything else is wrapped so clients can read it. */
function asOpenAiError(status: number, body: Buffer): Buffer {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { error?: { message?: unknown } };
    if (typeof parsed.error?.message === 'string') return body;
  } catch {
    // not JSON: wrapped below
  }
  return Buffer.from(
    JSON.stringify(
      openAiError(
        status,
        `the model server refused the request: ${body.toString('utf8').slice(0, 500)}`,
        'upstream_error',
      ),
    ),
  );
}
