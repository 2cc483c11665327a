import { cp, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from '@jest/globals';
import type { HistoryAndWorkflowId } from '@temporalio/client';
import { Worker, type ReplayResult, type ReplayWorkerOptions } from '@temporalio/worker';
import { makeWorkflowExporter } from '@temporalio/interceptors-opentelemetry';
import { Resource } from '@opentelemetry/resources';
import { NoopSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { DeterminismViolationError } from '@temporalio/workflow';
import { TRACING_WORKFLOW_MODULE } from '../../common/temporal-tracing';
import * as workflows from '../../workflows';
import { API_KEY_PATTERN, historyText } from '../support/history-text';

const ROOT = path.resolve(__dirname, '..', '..');
const HISTORIES = path.join(__dirname, 'histories');
let histories: (HistoryAndWorkflowId & { file: string })[];

beforeAll(async () => {
  const files = (await readdir(HISTORIES)).filter((f) => f.endsWith('.json')).sort();
  histories = await Promise.all(
    files.map(async (file) => {
      const history = JSON.parse(await readFile(path.join(HISTORIES, file), 'utf8'));
      const started = history.events[0].workflowExecutionStartedEventAttributes;
      return { file, workflowId: started?.workflowId ?? file, history };
    }),
  );
});

async function replayAll(workflowsPath: string, options: Partial<ReplayWorkerOptions> = {}): Promise<ReplayResult[]> {
  const results: ReplayResult[] = [];
  for await (const r of Worker.runReplayHistories(
    { workflowsPath, bundlerOptions: { ignoreModules: [] }, ...options },
    histories,
  ))
    results.push(r);
  return results;
}

describe('replay gate', () => {
  it('has a recorded history for every workflow type in workflows/', async () => {
    const types = Object.entries(workflows)
      .filter(([, v]) => typeof v === 'function')
      .map(([k]) => k);
    const recorded = new Set(
      histories.map(
        (h) =>
          (h.history as { events: { workflowExecutionStartedEventAttributes?: { workflowType: { name: string } } }[] })
            .events[0]!.workflowExecutionStartedEventAttributes!.workflowType.name,
      ),
    );
    expect(types.filter((t) => !recorded.has(t))).toEqual([]);
  });

  it('replays every recorded history against the current workflow code', async () => {
    const results = await replayAll(require.resolve('../../workflows'));
    expect(results).toHaveLength(histories.length);
    for (const r of results)
      expect({ workflowId: r.workflowId, error: r.error?.message }).toEqual({
        workflowId: r.workflowId,
        error: undefined,
      });
  });

  it('replays every recorded history with the tracing interceptors in the bundle (OTEL_EXPORTER_OTLP_ENDPOINT set)', async () => {
    // As a traced worker has them: the interceptors bundled, and the sink their workflow spans leave through.
    const results = await replayAll(require.resolve('../../workflows'), {
      interceptors: { workflowModules: [TRACING_WORKFLOW_MODULE] },
      sinks: { exporter: makeWorkflowExporter(new NoopSpanProcessor(), Resource.empty()) },
    });
    expect(results).toHaveLength(histories.length);
    for (const r of results)
      expect({ workflowId: r.workflowId, error: r.error?.message }).toEqual({
        workflowId: r.workflowId,
        error: undefined,
      });
  });

  it('fails with a determinism error when the workflow code changes under a recorded history', async () => {
    // A real edit: the registration workflow now sleeps before its first step, which recorded runs never did.
    const mutant = path.join(ROOT, '.data', 'replay-mutant');
    await rm(mutant, { recursive: true, force: true });
    await mkdir(mutant, { recursive: true });
    for (const dir of ['workflows', 'contracts', 'common', 'activities'])
      await cp(path.join(ROOT, dir), path.join(mutant, dir), { recursive: true });
    const file = path.join(mutant, 'workflows', 'model-registry.ts');
    const source = await readFile(file, 'utf8');
    const edited = `import { sleep } from '@temporalio/workflow';\n${source.replace("  enter('inspecting');\n  try {", "  await sleep('1 second');\n  enter('inspecting');\n  try {")}`;
    expect(edited).toContain("await sleep('1 second');");
    await writeFile(file, edited);
    const results = await replayAll(path.join(mutant, 'workflows', 'index.ts'));
    const failed = results.filter((r) => r.error);
    expect(failed.length).toBeGreaterThan(0);
    for (const r of failed) expect(r.error).toBeInstanceOf(DeterminismViolationError);
  });

  it('keeps secrets out of every recorded history', () => {
    for (const h of histories)
      expect({ file: h.file, leaks: API_KEY_PATTERN.test(historyText(h.history)) }).toEqual({
        file: h.file,
        leaks: false,
      });
  });
});
