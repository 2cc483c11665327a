import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort, portOpen, startProcess, tail, waitFor } from './process';

const run = promisify(execFile);

/** A running OpenTelemetry Collector writing every span it receives to `file`. */
export interface LocalCollector {
  /** OTLP/HTTP base URL (OTEL_EXPORTER_OTLP_ENDPOINT). */
  endpoint: string;
  /** JSON lines, one OTLP ExportTraceServiceRequest each (the file exporter's format). */
  file: string;
  stop(): Promise<void>;
}

/** The collector built and cached by deploy/dev/otel/build.sh. */
export async function collectorExecutable(): Promise<string> {
  const { stdout } = await run('bash', [path.join(__dirname, 'otel', 'build.sh')], { maxBuffer: 1 << 20 });
  return stdout.trim().split('\n').pop()!;
}

/**
 * A real OTLP receiver for dev and tests: the collector with its OTLP/HTTP receiver on a free loopback port and the
 * file exporter writing to `dataDir/traces.jsonl`. It has no telemetry of its own (no metrics port), so several
 * run side by side; warnings and errors go to its log.
 */
export async function startLocalCollector(opts: { dataDir: string }): Promise<LocalCollector> {
  await mkdir(opts.dataDir, { recursive: true });
  const executable = await collectorExecutable();
  const port = await freePort();
  const file = path.join(opts.dataDir, 'traces.jsonl');
  const config = path.join(opts.dataDir, 'otelcol.yaml');
  // JSON is YAML: the config is written with JSON.stringify so no path needs quoting.
  await writeFile(
    config,
    JSON.stringify({
      receivers: { otlp: { protocols: { http: { endpoint: `127.0.0.1:${port}` } } } },
      exporters: { file: { path: file, flush_interval: '100ms' } },
      service: {
        pipelines: { traces: { receivers: ['otlp'], exporters: ['file'] } },
      },
    }),
  );
  const proc = await startProcess({
    name: 'otelcol',
    command: executable,
    args: ['--config', `file:${config}`],
    dataDir: opts.dataDir,
  });
  try {
    await waitFor('the OpenTelemetry Collector to listen', () => portOpen(port), 60_000);
  } catch (err) {
    await proc.stop();
    throw new Error(`${(err as Error).message}\n${await tail(proc.logFile)}`, { cause: err });
  }
  return { endpoint: `http://127.0.0.1:${port}`, file, stop: () => proc.stop() };
}

/** The spans the collector has written so far, flattened (OTLP JSON: ids in hex, resource attributes kept apart). */
export async function collectedSpans(file: string): Promise<CollectedSpan[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const spans: CollectedSpan[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const batch = JSON.parse(line) as OtlpTraces;
    for (const rs of batch.resourceSpans ?? []) {
      const service = rs.resource?.attributes?.find((a) => a.key === 'service.name')?.value.stringValue;
      for (const ss of rs.scopeSpans ?? [])
        for (const s of ss.spans ?? [])
          spans.push({
            traceId: s.traceId,
            spanId: s.spanId,
            parentSpanId: s.parentSpanId || undefined,
            name: s.name,
            kind: s.kind,
            service,
            attributes: Object.fromEntries(
              (s.attributes ?? []).map((a) => [a.key, a.value.stringValue ?? a.value.intValue ?? a.value.boolValue]),
            ),
          });
    }
  }
  return spans;
}

export interface CollectedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  name: string;
  kind: number;
  service: string | undefined;
  attributes: Record<string, unknown>;
}

interface OtlpAttribute {
  key: string;
  value: { stringValue?: string; intValue?: string; boolValue?: boolean };
}

interface OtlpTraces {
  resourceSpans?: {
    resource?: { attributes?: OtlpAttribute[] };
    scopeSpans?: {
      spans?: {
        traceId: string;
        spanId: string;
        parentSpanId?: string;
        name: string;
        kind: number;
        attributes?: OtlpAttribute[];
      }[];
    }[];
  }[];
}
