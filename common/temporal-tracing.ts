import {
  makeWorkflowExporter,
  OpenTelemetryActivityInboundInterceptor,
  OpenTelemetryActivityOutboundInterceptor,
  OpenTelemetryWorkflowClientInterceptor,
} from '@temporalio/interceptors-opentelemetry';
import type { ClientInterceptors } from '@temporalio/client';
import type { ActivityInterceptorsFactory, WorkerOptions } from '@temporalio/worker';
import type { Tracing } from './tracing';

/**
 * The workflow interceptors that trace a workflow and the activities, child workflows and signals it starts. They run
 * inside the workflow sandbox, so they must be bundled with the workflow code: Worker.create adds them when it
 * bundles `workflowsPath`; a prebuilt bundle (LLMHUB_WORKFLOW_BUNDLE) must be built with them as
 * `workflowInterceptorModules`. They add headers to commands, never commands, so recorded histories replay with or
 * without them (test/replay/replay.test.ts).
 */
export const TRACING_WORKFLOW_MODULE =
  require.resolve('@temporalio/interceptors-opentelemetry/lib/workflow-interceptors');

/** What Worker.create needs for traces: activity spans, workflow spans (exported through a sink), the bundle's module. */
export function tracingWorkerOptions(tracing: Tracing | undefined): {
  activity: ActivityInterceptorsFactory[];
  workflowModules: string[];
  sinks: NonNullable<WorkerOptions['sinks']>;
} {
  if (!tracing) return { activity: [], workflowModules: [], sinks: {} };
  return {
    activity: [
      (ctx) => ({
        inbound: new OpenTelemetryActivityInboundInterceptor(ctx),
        outbound: new OpenTelemetryActivityOutboundInterceptor(ctx),
      }),
    ],
    workflowModules: [TRACING_WORKFLOW_MODULE],
    sinks: { exporter: makeWorkflowExporter(tracing.spanProcessor, tracing.resource) },
  };
}

/** The Temporal client's interceptors: starting a workflow is a span of the caller's trace, passed on in its headers. */
export const tracingClientInterceptors = (tracing: Tracing | undefined): ClientInterceptors | undefined =>
  tracing ? { workflow: [new OpenTelemetryWorkflowClientInterceptor()] } : undefined;
