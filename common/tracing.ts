import { Resource } from '@opentelemetry/resources';
import { BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import type { Config } from './config';

/** The process's registered tracer provider: what the Temporal worker's workflow-span sink needs besides the global API. */
export interface Tracing {
  resource: Resource;
  spanProcessor: SpanProcessor;
  /** Sends every ended span now (tests read the collector's output after it). */
  flush(): Promise<void>;
  /** Flushes, then stops exporting. */
  shutdown(): Promise<void>;
}

/**
 * Registers the process-wide tracer provider (W3C trace context propagation, AsyncLocalStorage context) exporting
 * over OTLP/HTTP protobuf to `<endpoint>/v1/traces`. Without an endpoint nothing is registered, so the
 * @opentelemetry/api calls in the code stay no-ops and the Temporal interceptors are not installed at all.
 */
export function startTracing(opts: { endpoint: string | undefined; serviceName: string }): Tracing | undefined {
  if (!opts.endpoint) return undefined;
  const resource = new Resource({ [ATTR_SERVICE_NAME]: opts.serviceName });
  const spanProcessor = new BatchSpanProcessor(
    // Other OTEL_EXPORTER_OTLP_* settings (headers for a hosted backend, timeout) are read by the exporter itself.
    new OTLPTraceExporter({ url: `${opts.endpoint.replace(/\/+$/, '')}/v1/traces` }),
  );
  const provider = new NodeTracerProvider({ resource, spanProcessors: [spanProcessor] });
  provider.register();
  return {
    resource,
    spanProcessor,
    flush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
}

/** Tracing as the environment configures it, for the process role named (its default service.name). */
export const tracingFromConfig = (config: Config, role: 'api' | 'gateway' | 'worker'): Tracing | undefined =>
  startTracing({
    endpoint: config.OTEL_EXPORTER_OTLP_ENDPOINT,
    serviceName: config.OTEL_SERVICE_NAME ?? `llmhub-${role}`,
  });
