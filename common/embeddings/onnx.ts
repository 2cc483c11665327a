import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Embedder } from './index';
import type { OnnxThreadData, OnnxThreadReply } from './onnx-thread';

// The built thread entry beside this file; from the sources (dev, tests), tsx compiles it as it does everything else.
const ENTRY = path.join(__dirname, `onnx-thread${path.extname(__filename)}`);
// Not the process's own flags: a thread refuses per-process ones (the API role's --max-old-space-size and
// --max-semi-space-size are ERR_WORKER_INVALID_EXEC_ARGV), and its heap is its own anyway.
const EXEC_ARGV = ENTRY.endsWith('.ts') ? ['--import', 'tsx'] : [];

interface Waiter {
  resolve: (vectors: Float32Array[]) => void;
  reject: (err: Error) => void;
}

interface ModelThread {
  worker: Worker;
  /** Requests posted to this thread and not yet answered. */
  pending: number;
}

/**
 * An in-process ONNX sentence-embedding model (onnx-model.ts), run on threads of its own: onnxruntime-node
 * runs a session synchronously, so on the worker's event loop each inference would stall the downloads, flushes
 * and heartbeats of every running batch, and the model would idle while they caught up. Each thread owns a session
 * and runs one batch at a time; a request goes to the thread with the fewest outstanding, and queues there, so it
 * is fed without a round trip through the event loop. Holds the process open only while a request is outstanding.
 */
export class OnnxEmbedder implements Embedder {
  private readonly waiting = new Map<number, Waiter>();
  private nextId = 0;
  private ended: Error | undefined;

  private constructor(
    readonly id: string,
    readonly dimensions: number,
    private readonly threads: ModelThread[],
    onEnd: () => void,
  ) {
    const end = (err: Error) => {
      if (!this.ended) {
        onEnd();
        // One session gone ends them all: a holder reloads the whole model rather than run on a part of it.
        for (const t of threads) void t.worker.terminate();
      }
      this.ended ??= err;
      for (const w of this.waiting.values()) w.reject(this.ended);
      this.waiting.clear();
    };
    for (const t of threads) {
      t.worker.on('message', (m: OnnxThreadReply) => {
        if (!('id' in m)) return;
        const w = this.waiting.get(m.id)!;
        this.waiting.delete(m.id);
        if (--t.pending === 0) t.worker.unref();
        if ('error' in m) w.reject(new Error(m.error));
        else w.resolve(m.vectors);
      });
      t.worker.on('error', end);
      t.worker.on('exit', (code) => end(new Error(`the embedding thread exited (code ${code})`)));
      t.worker.unref();
    }
  }

  static async load(
    modelDir: string,
    opts: {
      id?: string;
      maxTokens?: number;
      /** onnxruntime's intra-op threads per session (0: one per core). */
      threads?: number;
      /** Sessions, each on a thread of its own, taking whole batches (default 1). */
      sessions?: number;
      /** spin: onnxruntime's threads spin-wait (faster for a model that has the cores to itself; see onnx-model.ts). */
      spin?: boolean;
      /** Called once if a thread ends (a fatal error): every request after it fails, so a holder loads anew. */
      onEnd?: () => void;
    } = {},
  ): Promise<OnnxEmbedder> {
    const workers = Array.from(
      { length: opts.sessions ?? 1 },
      () =>
        new Worker(ENTRY, {
          workerData: {
            modelDir,
            maxTokens: opts.maxTokens,
            threads: opts.threads,
            spin: opts.spin,
          } satisfies OnnxThreadData,
          execArgv: EXEC_ARGV,
          name: 'embedder',
        }),
    );
    try {
      const dimensions = await Promise.all(
        workers.map(
          (thread) =>
            new Promise<number>((resolve, reject) => {
              thread.once('message', (m: OnnxThreadReply) => resolve('dimensions' in m ? m.dimensions : 0));
              thread.once('error', reject);
              thread.once('exit', (code) =>
                reject(new Error(`the embedding thread exited (code ${code}) while loading`)),
              );
            }),
        ),
      );
      return new OnnxEmbedder(
        opts.id ?? path.basename(modelDir),
        dimensions[0]!,
        workers.map((worker) => ({ worker, pending: 0 })),
        opts.onEnd ?? (() => undefined),
      );
    } catch (err) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw err;
    }
  }

  /** Ends the threads: requests still waiting, and any later one, fail. */
  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.worker.terminate()));
  }

  embed(texts: string[]): Promise<Float32Array[]> {
    if (this.ended) return Promise.reject(this.ended);
    const id = this.nextId++;
    const thread = this.threads.reduce((a, b) => (b.pending < a.pending ? b : a));
    if (thread.pending++ === 0) thread.worker.ref();
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      thread.worker.postMessage({ id, texts });
    });
  }
}
