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

/**
 * An in-process ONNX sentence-embedding model (onnx-model.ts), run on a thread of its own: onnxruntime-node
 * runs a session synchronously, so on the worker's event loop each inference would stall the downloads, flushes
 * and heartbeats of every running batch, and the model would idle while they caught up. The thread runs one
 * batch at a time (the session already uses every core) and the requests queue there, so it is fed without a
 * round trip through the event loop. Holds the process open only while a request is outstanding.
 */
export class OnnxEmbedder implements Embedder {
  private readonly waiting = new Map<number, Waiter>();
  private nextId = 0;
  private ended: Error | undefined;

  private constructor(
    readonly id: string,
    readonly dimensions: number,
    private readonly thread: Worker,
    onEnd: () => void,
  ) {
    thread.on('message', (m: OnnxThreadReply) => {
      if (!('id' in m)) return;
      const w = this.waiting.get(m.id)!;
      this.waiting.delete(m.id);
      if (this.waiting.size === 0) thread.unref();
      if ('error' in m) w.reject(new Error(m.error));
      else w.resolve(m.vectors);
    });
    const end = (err: Error) => {
      if (!this.ended) onEnd();
      this.ended ??= err;
      for (const w of this.waiting.values()) w.reject(this.ended);
      this.waiting.clear();
    };
    thread.on('error', end);
    thread.on('exit', (code) => end(new Error(`the embedding thread exited (code ${code})`)));
    thread.unref();
  }

  static async load(
    modelDir: string,
    /** spin: onnxruntime's threads spin-wait (faster for a model that has the cores to itself; see onnx-model.ts). */
    opts: {
      id?: string;
      maxTokens?: number;
      threads?: number;
      spin?: boolean;
      /** Called once if the thread ends (a fatal error): every request after it fails, so a holder loads anew. */
      onEnd?: () => void;
    } = {},
  ): Promise<OnnxEmbedder> {
    const thread = new Worker(ENTRY, {
      workerData: {
        modelDir,
        maxTokens: opts.maxTokens,
        threads: opts.threads,
        spin: opts.spin,
      } satisfies OnnxThreadData,
      execArgv: EXEC_ARGV,
      name: 'embedder',
    });
    try {
      const dimensions = await new Promise<number>((resolve, reject) => {
        thread.once('message', (m: OnnxThreadReply) => resolve('dimensions' in m ? m.dimensions : 0));
        thread.once('error', reject);
        thread.once('exit', (code) => reject(new Error(`the embedding thread exited (code ${code}) while loading`)));
      });
      return new OnnxEmbedder(opts.id ?? path.basename(modelDir), dimensions, thread, opts.onEnd ?? (() => undefined));
    } catch (err) {
      await thread.terminate();
      throw err;
    }
  }

  /** Ends the thread: requests still waiting, and any later one, fail. */
  async close(): Promise<void> {
    await this.thread.terminate();
  }

  embed(texts: string[]): Promise<Float32Array[]> {
    if (this.ended) return Promise.reject(this.ended);
    const id = this.nextId++;
    if (this.waiting.size === 0) this.thread.ref();
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.thread.postMessage({ id, texts });
    });
  }
}
