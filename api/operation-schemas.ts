import { Type, type Static, type TSchema } from '@sinclair/typebox';
import type { WorkflowExecutionStatusName } from '@temporalio/client';
import { AgentRunPhases, RiskLevels, type AgentDefinition, type AgentRunStatus } from '../contracts/agent-run';
import {
  ConversionTargets,
  type ConversionOptions,
  type ConversionState,
  type ConversionStatus,
  type TargetResult,
} from '../contracts/conversion';
import { FINE_TUNE_METHODS, type FineTuneStatus } from '../contracts/fine-tune';
import type { IngestionProgress } from '../contracts/ingestion';
import type { PipelineStatus } from '../contracts/pipeline';
import type { RolloutStatus } from '../contracts/rollout';
import type { ModelArtifact } from '../common/store/conversions';

/**
 * The answers of the operations' read and steering routes, as the document states them: the workflows' status
 * queries (contracts/*.ts) exactly. Each schema is checked against its contract type below, both ways, so a field
 * added to a status without its schema fails the build instead of vanishing from the answer (Fastify's serializer
 * drops what the response schema does not declare).
 */

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
// Unsafe only for the static type: TypeBox types a union built from an array as never.
const Literals = <const T extends string>(values: readonly T[]) =>
  Type.Unsafe<T>(Type.Union(values.map((v) => Type.Literal(v))));
/** Epoch milliseconds of workflow time. */
const Millis = Type.Number({ description: 'epoch milliseconds' });

/** Both ways assignable: the schema says exactly what the type says. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : never) : never;
const same = <A, B>(ok: Same<A, B>) => ok;

const WorkflowStatusNames = [
  'UNSPECIFIED',
  'RUNNING',
  'COMPLETED',
  'FAILED',
  'CANCELLED',
  'TERMINATED',
  'CONTINUED_AS_NEW',
  'TIMED_OUT',
  'PAUSED',
  'UNKNOWN',
] as const satisfies readonly WorkflowExecutionStatusName[];
export const WorkflowStatus = Literals(WorkflowStatusNames);
same<Static<typeof WorkflowStatus>, WorkflowExecutionStatusName>(true);

/** What every read of a run adds to the run's status: its Temporal workflow and that workflow's status. */
export const RunFields = { workflowId: Type.String(), workflowStatus: WorkflowStatus };

// Rollouts (contracts/rollout.ts)
const Measurement = Type.Object({
  phase: Literals(['Successful', 'Failed', 'Inconclusive']),
  stepIndex: Type.Integer(),
  version: Type.String(),
  startedAt: Millis,
  finishedAt: Millis,
  requests: Type.Integer(),
  errors: Type.Integer(),
  successRate: Type.Number(),
  p95LatencyMs: Nullable(Type.Number()),
  message: Type.String(),
});
export const RolloutStatusSchema = Type.Object({
  phase: Literals([
    'validating',
    'deploying',
    'waiting_ready',
    'probing',
    'progressing',
    'paused',
    'awaiting_approval',
    'promoting',
    'promoted',
    'rolling_back',
    'rolled_back',
  ]),
  deploymentId: Type.String(),
  modelId: Type.String(),
  version: Type.String(),
  specHash: Type.String(),
  currentStepIndex: Type.Integer(),
  stepCount: Type.Integer(),
  weights: Type.Object({
    stable: Nullable(Type.String()),
    canary: Nullable(Type.String()),
    canaryWeight: Type.Number(),
  }),
  pauseReason: Nullable(Literals(['step', 'operator', 'inconclusive', 'approval'])),
  approvals: Type.Array(
    Type.Object({ stepIndex: Type.Integer(), by: Type.String(), reason: Nullable(Type.String()), at: Millis }),
  ),
  analyses: Type.Array(Measurement),
  startedAt: Millis,
  endpoint: Nullable(Type.String()),
  failureReason: Nullable(Type.String()),
  rollbackStartedAt: Nullable(Millis),
  finishedAt: Nullable(Millis),
});
same<Static<typeof RolloutStatusSchema>, RolloutStatus>(true);
export const RolloutRead = Type.Object({ ...RunFields, ...RolloutStatusSchema.properties });

// Conversions (contracts/conversion.ts, common/store/conversions.ts)
const Target = Literals(ConversionTargets);
const Latency = Type.Object({
  runs: Type.Integer(),
  batch: Type.Integer(),
  p50Ms: Type.Number(),
  p95Ms: Type.Number(),
  meanMs: Type.Number(),
  device: Type.String(),
});
const TargetResultSchema = Type.Object({
  target: Target,
  status: Literals(['published', 'failed', 'not_run']),
  reason: Type.Optional(Type.String()),
  validation: Type.Optional(
    Type.Object({
      passed: Type.Boolean(),
      maxAbsError: Type.Number(),
      maxRelError: Type.Number(),
      tolerance: Type.Number(),
      samples: Type.Integer(),
    }),
  ),
  latency: Type.Optional(Latency),
  artifact: Type.Optional(Type.Object({ uri: Type.String(), sha256: Type.String(), sizeBytes: Type.Integer() })),
  tritonModel: Type.Optional(Type.String()),
  configUri: Type.Optional(Type.String()),
});
same<Static<typeof TargetResultSchema>, TargetResult>(true);
const ConversionOptionsSchema = Type.Object({
  targets: Type.Array(Target),
  precision: Literals(['fp32', 'fp16']),
  validation: Type.Object({
    samples: Type.Optional(Type.Array(Type.Array(Type.Number()))),
    sampleCount: Type.Integer(),
    seed: Type.Integer(),
    tolerance: Type.Partial(Type.Record(Target, Type.Number())),
  }),
  profile: Type.Object({ runs: Type.Integer(), batch: Type.Integer() }),
});
same<Static<typeof ConversionOptionsSchema>, ConversionOptions>(true);
const ConversionStates = ['running', 'succeeded', 'partial', 'failed', 'error'] as const;
export const ConversionStateSchema = Literals(ConversionStates);
same<Static<typeof ConversionStateSchema>, ConversionState>(true);
const ConversionStatusSchema = Type.Object({
  phase: Literals(['exporting', 'converting', 'publishing', 'succeeded', 'partial', 'failed', 'error', 'cancelled']),
  targets: Type.Array(TargetResultSchema),
  error: Type.Optional(Type.String()),
});
same<Static<typeof ConversionStatusSchema>, ConversionStatus>(true);
const Artifact = Type.Object({
  kind: Target,
  uri: Type.String(),
  sha256: Type.String(),
  sizeBytes: Type.Integer(),
  tritonRepositoryUri: Type.String(),
  conversionWorkflowId: Type.String(),
  createdAt: Type.String({ format: 'date-time' }),
});
same<Static<typeof Artifact>, ModelArtifact>(true);
/** The outcome of a finished conversion, as the start answers a memoised request. */
export const ConversionOutcome = Type.Object({
  targets: Type.Array(TargetResultSchema),
  tritonRepositoryUri: Nullable(Type.String()),
  error: Nullable(Type.String()),
});
export const ConversionRead = Type.Object({
  conversionId: Type.String(),
  workflowId: Type.String(),
  modelId: Type.String(),
  version: Type.String(),
  memoKey: Type.String(),
  toolchainVersion: Type.String(),
  options: ConversionOptionsSchema,
  state: ConversionStateSchema,
  targets: Type.Array(TargetResultSchema),
  tritonRepositoryUri: Nullable(Type.String()),
  error: Nullable(Type.String()),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
  artifacts: Type.Array(Artifact, { description: 'the artifacts this conversion registered for the version' }),
  progress: Type.Optional({
    ...ConversionStatusSchema,
    description: "the running workflow's finer phase, while the conversion runs",
  }),
});

// Fine-tunes (contracts/fine-tune.ts)
const ModelVersion = Type.Object({ modelId: Type.String(), version: Type.String() });
// A pair as an array schema: OpenAPI 3.1 (JSON Schema 2020-12) has no `items: [...]` tuples.
const Point = Type.Unsafe<[number, number]>(
  Type.Array(Type.Number(), { minItems: 2, maxItems: 2, description: '[step, loss]' }),
);
const FineTuneStatusSchema = Type.Object({
  phase: Literals([
    'validating',
    'queued',
    'starting',
    'pending',
    'running',
    'resuming',
    'registering',
    'succeeded',
    'failed',
    'cancelled',
  ]),
  fineTuneId: Type.String(),
  base: ModelVersion,
  output: ModelVersion,
  method: Literals(FINE_TUNE_METHODS),
  gpuCount: Type.Integer(),
  job: Nullable(
    Type.Object({
      name: Type.String(),
      attempt: Type.Integer(),
      podPhase: Nullable(Type.String()),
      node: Nullable(Type.String()),
      pendingReason: Nullable(Type.String()),
    }),
  ),
  progress: Nullable(
    Type.Object({
      step: Type.Integer(),
      totalSteps: Type.Integer(),
      lossCurve: Type.Array(Point),
      evalLoss: Type.Array(Point),
      checkpointStep: Nullable(Type.Integer()),
    }),
  ),
  resumptions: Type.Array(Type.Object({ attempt: Type.Integer(), fromStep: Type.Integer(), reason: Type.String() })),
  result: Nullable(
    Type.Object({
      modelId: Type.String(),
      version: Type.String(),
      artifactUri: Type.String(),
      checksum: Type.String(),
    }),
  ),
  failureReason: Nullable(Type.String()),
  timeline: Type.Object({ queuedAt: Nullable(Millis), claimedAt: Nullable(Millis), finishedAt: Nullable(Millis) }),
});
same<Static<typeof FineTuneStatusSchema>, FineTuneStatus>(true);
export const FineTuneRead = Type.Object({
  ...RunFields,
  ...FineTuneStatusSchema.properties,
  queue: Nullable(
    Type.Object(
      { position: Type.Integer({ minimum: 1 }) },
      {
        description:
          "the run's place among the tenant's runs queued for GPUs, while queued; null for the moment between the phase turning queued and the run joining the queue",
      },
    ),
  ),
});

// Pipelines (contracts/pipeline.ts)
const Step = Type.Object({
  workflowId: Type.String(),
  outcome: Literals(['pending', 'running', 'succeeded', 'failed', 'cancelled', 'skipped', 'memoized', 'waiting']),
  reason: Nullable(Type.String()),
});
export const PipelineStatusSchema = Type.Object({
  pipelineId: Type.String(),
  stage: Literals(['fine_tune', 'conversion', 'awaiting_approval', 'rollout', 'succeeded', 'failed', 'cancelled']),
  model: ModelVersion,
  steps: Type.Object({ fineTune: Step, conversion: Step, rollout: Step }),
  conversion: Nullable(
    Type.Object({ state: Type.String(), tritonRepositoryUri: Type.String(), published: Type.Array(Type.String()) }),
  ),
  awaitingApproval: Type.Boolean(),
  approval: Nullable(
    Type.Object({
      decision: Literals(['approve', 'deny', 'timed_out']),
      by: Nullable(Type.String()),
      reason: Nullable(Type.String()),
      at: Millis,
    }),
  ),
  failureReason: Nullable(Type.String()),
});
same<Static<typeof PipelineStatusSchema>, PipelineStatus>(true);
export const PipelineRead = Type.Object({ ...RunFields, ...PipelineStatusSchema.properties });

// Agents and their runs (contracts/agent-run.ts)
export const AgentSchema = Type.Object({
  id: Type.String(),
  model: Type.String(),
  systemPrompt: Type.String(),
  tools: Type.Array(Type.String()),
  stepLimit: Type.Integer(),
  approvalTimeoutSeconds: Type.Integer(),
});
same<Static<typeof AgentSchema>, AgentDefinition>(true);
const ToolCall = Type.Object({
  id: Type.String(),
  type: Type.Literal('function'),
  function: Type.Object({ name: Type.String(), arguments: Type.String() }),
});
const Message = Type.Union([
  Type.Object({ role: Literals(['system', 'user']), content: Type.String() }),
  Type.Object({
    role: Type.Literal('assistant'),
    content: Nullable(Type.String()),
    tool_calls: Type.Optional(Type.Array(ToolCall)),
  }),
  Type.Object({ role: Type.Literal('tool'), tool_call_id: Type.String(), content: Type.String() }),
]);
const Risk = Literals(RiskLevels);
const ToolCallRecord = Type.Object({
  id: Type.String(),
  step: Type.Integer(),
  tool: Type.String(),
  arguments: Type.Unknown(),
  risk: Nullable(Risk),
  status: Literals(['refused', 'awaiting_approval', 'denied', 'running', 'succeeded', 'failed', 'cancelled']),
  reason: Nullable(Type.String()),
  actionHash: Nullable(Type.String()),
  approval: Nullable(
    Type.Object({
      decision: Literals(['approved', 'denied']),
      by: Type.String(),
      at: Millis,
      reason: Nullable(Type.String()),
    }),
  ),
  result: Nullable(Type.String()),
  resultRef: Nullable(Type.String()),
  at: Millis,
});
export const AgentRunStatusSchema = Type.Object({
  messages: Type.Array(Message),
  toolCalls: Type.Array(ToolCallRecord),
  step: Type.Integer(),
  runId: Type.String(),
  agentId: Type.String(),
  phase: Literals(AgentRunPhases),
  pending: Nullable(
    Type.Object({
      toolCallId: Type.String(),
      tool: Type.String(),
      arguments: Type.Unknown(),
      risk: Risk,
      actionHash: Type.String(),
      deadline: Millis,
    }),
  ),
  answer: Nullable(Type.String()),
  failureReason: Nullable(Type.String()),
  startedAt: Millis,
  finishedAt: Nullable(Millis),
});
same<Static<typeof AgentRunStatusSchema>, AgentRunStatus>(true);
export const AgentRunRead = Type.Object({ ...RunFields, ...AgentRunStatusSchema.properties });

// Ingestions (contracts/ingestion.ts)
const IngestionProgressSchema = Type.Object({
  phase: Literals(['listing', 'indexing', 'removing_deleted', 'completed']),
  failures: Type.Array(Type.Object({ documentId: Type.String(), reason: Type.String() })),
  batchesDone: Type.Integer(),
  batchesTotal: Type.Integer(),
  total: Type.Integer(),
  done: Type.Integer(),
  skippedUnchanged: Type.Integer(),
  failed: Type.Integer(),
  chunksWritten: Type.Integer(),
  removed: Type.Integer(),
});
same<Static<typeof IngestionProgressSchema>, IngestionProgress>(true);
/** The workflow's Temporal status always; its progress once the run has answered its first query. */
export const IngestionRead = Type.Object({
  workflowId: Type.String(),
  status: WorkflowStatus,
  ...Type.Partial(IngestionProgressSchema).properties,
});

/**
 * A cluster named in a request, one of those configured (LLMHUB_CLUSTERS) that can run the operation: known when
 * the routes are registered, so the document lists them and a schema-valid name is never refused.
 */
export const ClusterName = (names: string[], description: string) => Type.String({ enum: names, description });

/** One server-sent event as clients (and schemathesis) read it: its `event` name and its `data` as JSON. */
const SseEvent = <E extends string>(event: E, data: TSchema) =>
  Type.Object({
    event: Type.Literal(event),
    data: Type.String({ contentMediaType: 'application/json', contentSchema: data }),
  });
/** The events of GET /v1/agent-runs/{id}/events. */
export const AgentRunEvent = Type.Union([
  SseEvent('status', AgentRunStatusSchema),
  SseEvent('end', Type.Object({}, { additionalProperties: false })),
  SseEvent('error', Type.Object({ message: Type.String() })),
]);
