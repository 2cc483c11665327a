import { Type, type Static } from '@sinclair/typebox';
import type { Client } from '@temporalio/client';
import { Client as PgClient, type Pool } from 'pg';
import { ConflictError } from '../common/errors';
import type { Logger } from '../common/logger';
import { ServedVersionStore } from '../common/store/served-versions';
import {
  AUTOSCALER_WORKFLOW,
  autoscalerWakeSignal,
  autoscalerWorkflowId,
  type AutoscalerInput,
  type AutoscalingSpec,
} from '../contracts/autoscaling';
import { DURATION_PATTERN } from '../contracts/rollout';
import { ModelIdKey, TenantIdKey } from '../contracts/search-attributes';

const Duration = Type.String({ pattern: DURATION_PATTERN, description: 'e.g. 30s, 5m, 1h' });
const MAX_REPLICAS = 1000;

/** The `autoscaling` settings of POST /v1/deploy and PUT /v1/models/{id}/route. */
export const AutoscalingBody = Type.Object(
  {
    minReplicas: Type.Integer({ minimum: 0, maximum: MAX_REPLICAS, description: '0 allows scale to zero' }),
    maxReplicas: Type.Integer({
      minimum: 1,
      maximum: MAX_REPLICAS,
      description: 'at least minReplicas (409 naming body.autoscaling.maxReplicas otherwise)',
    }),
    target: Type.Union(
      [
        Type.Object(
          {
            concurrency: Type.Number({
              exclusiveMinimum: 0,
              maximum: 100_000,
              description: 'requests in flight per replica',
            }),
          },
          { additionalProperties: false },
        ),
        Type.Object(
          { tokensPerSecond: Type.Number({ exclusiveMinimum: 0, maximum: 10_000_000, description: 'per replica' }) },
          { additionalProperties: false },
        ),
      ],
      { description: 'the load one replica should carry' },
    ),
    scaleDownDelay: Type.Optional({
      ...Duration,
      description: 'scale-down stabilisation window; default 5m',
    }),
    scaleToZeroAfter: Type.Optional({
      ...Duration,
      description: 'time without traffic before 0 replicas (minReplicas 0 only); default 15m',
    }),
  },
  { additionalProperties: false },
);
export type AutoscalingRequest = Static<typeof AutoscalingBody>;

/** GET /v1/models/{id}/versions/{version}/autoscaler: the autoscaler workflow's status query. */
export const AutoscalerRead = Type.Object({
  phase: Type.Union([Type.Literal('running'), Type.Literal('yielding'), Type.Literal('stopped')]),
  tenantId: Type.String(),
  modelId: Type.String(),
  version: Type.String(),
  replicas: Type.Integer({ description: 'the replicas last set or seen' }),
  settings: Type.Union([AutoscalingBody, Type.Null()]),
  decisions: Type.Array(
    Type.Object({
      at: Type.Integer({ description: 'epoch ms, when the decision was recorded' }),
      measuredAt: Type.Optional(
        Type.Integer({
          description: 'epoch ms, when the load was read (the stabilisation window counts back from it)',
        }),
      ),
      metric: Type.Union([Type.Number(), Type.Null()], { description: 'load per replica over the window' }),
      current: Type.Integer(),
      desired: Type.Integer({ description: 'what the HPA rule wanted, before stabilisation, step bound and quota' }),
      applied: Type.Integer(),
      reason: Type.String(),
      message: Type.String(),
    }),
    { description: 'the newest decisions, oldest first' },
  ),
});

/**
 * The settings with their defaults. A minimum above the maximum is 409 naming the field, as other cross-field checks
 * no JSON Schema can state (a schema-valid body is never a 400).
 */
export function autoscalingOf(body: AutoscalingRequest, field: string): AutoscalingSpec {
  if (body.minReplicas > body.maxReplicas)
    throw new ConflictError(`maxReplicas (${body.maxReplicas}) must be at least minReplicas (${body.minReplicas})`, {
      field: `${field}.maxReplicas`,
    });
  return {
    minReplicas: body.minReplicas,
    maxReplicas: body.maxReplicas,
    target: body.target,
    scaleDownDelay: body.scaleDownDelay ?? '5m',
    scaleToZeroAfter: body.scaleToZeroAfter ?? '15m',
  };
}

type Key = { tenantId: string; modelId: string; version: string };

/** Starts the version's autoscaler, or wakes the running one (it reads its settings on every pass). */
export async function wakeAutoscaler(temporal: Client, taskQueue: string, k: Key): Promise<void> {
  const input: AutoscalerInput = k;
  await temporal.workflow.signalWithStart(AUTOSCALER_WORKFLOW, {
    workflowId: autoscalerWorkflowId(k.tenantId, k.modelId, k.version),
    taskQueue,
    args: [input],
    signal: autoscalerWakeSignal,
    typedSearchAttributes: [
      { key: TenantIdKey, value: k.tenantId },
      { key: ModelIdKey, value: k.modelId },
    ],
    staticSummary: `Autoscale ${k.modelId}@${k.version}`,
  });
}

const CHANNEL = 'llmhub_autoscale';
/** Pending wake-ups are also taken this often, in case a notification was lost (a dropped connection). */
const POLL_MS = 5_000;

/**
 * Turns gateways' wake-up requests (served_versions rows, NOTIFY llmhub_autoscale) into signal-with-start of the
 * versions' autoscalers. It runs in the api role, which holds the Temporal client the gateway role may not load;
 * each request is taken by one api replica (takeWakes), and a failed signal puts it back for the next pass.
 */
export function startWakeRelay(deps: { db: Pool; temporal: Client; taskQueue: string; logger: Logger }): {
  close(): Promise<void>;
} {
  const store = new ServedVersionStore(deps.db);
  let closed = false;
  let listener: PgClient | undefined;
  let running: Promise<void> = Promise.resolve();
  // A wake-up put back after a failed signal notifies again: without a pause, a Temporal outage would be retried
  // as fast as the round trips go. Notifications wait it out; the poll still runs.
  let pausedUntil = 0;
  const relay = (polled = false) => {
    if (!polled && Date.now() < pausedUntil) return;
    running = running.then(async () => {
      if (closed) return;
      try {
        for (const k of await store.takeWakes()) {
          await wakeAutoscaler(deps.temporal, deps.taskQueue, k).catch(async (err: unknown) => {
            deps.logger.warn({ err, ...k }, 'cannot wake the autoscaler; retrying');
            pausedUntil = Date.now() + POLL_MS;
            await store.requestWake(k);
          });
        }
      } catch (err) {
        deps.logger.warn({ err }, 'autoscaler wake-up relay failed; retrying');
      }
    });
  };
  const listen = async () => {
    const c = new PgClient(deps.db.options);
    c.on('notification', () => relay());
    c.on('error', (err) => {
      deps.logger.warn({ err }, 'autoscaler wake-up feed lost (polling covers it)');
      if (listener === c) listener = undefined;
    });
    await c.connect();
    await c.query(`LISTEN ${CHANNEL}`);
    listener = c;
  };
  const timer = setInterval(() => {
    if (!listener) void listen().catch(() => undefined);
    relay(true);
  }, POLL_MS);
  timer.unref();
  void listen()
    .catch((err: unknown) => deps.logger.warn({ err }, 'cannot listen for autoscaler wake-ups (polling covers it)'))
    .then(() => relay(true));
  return {
    async close() {
      closed = true;
      clearInterval(timer);
      await running;
      await listener?.end().catch(() => undefined);
    },
  };
}
