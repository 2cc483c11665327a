import { parentPort, workerData } from 'node:worker_threads';
import { OnnxModel } from './onnx-model';

/** What the embedding thread is started with (workerData). */
export interface OnnxThreadData {
  modelDir: string;
  maxTokens?: number;
  threads?: number;
  spin?: boolean;
}

export type OnnxThreadReply =
  { ready: true; dimensions: number } | { id: number; vectors: Float32Array[] } | { id: number; error: string };

/**
 * The embedding thread: owns the model and runs one request at a time, in the order they were posted. Requests
 * queue on its port while it works, so the next batch starts the moment one ends, whatever the worker's event
 * loop is doing (downloads, flushes, heartbeats), and that loop is never blocked by an inference.
 */
async function serve(): Promise<void> {
  const port = parentPort!;
  const model = await OnnxModel.load((workerData as OnnxThreadData).modelDir, workerData as OnnxThreadData);
  const [probe] = await model.run(['dimension probe']);
  port.postMessage({ ready: true, dimensions: probe!.length } satisfies OnnxThreadReply);
  port.on('message', ({ id, texts }: { id: number; texts: string[] }) => {
    model.run(texts).then(
      (vectors) =>
        port.postMessage(
          { id, vectors } satisfies OnnxThreadReply,
          vectors.map((v) => v.buffer as ArrayBuffer),
        ),
      (err: unknown) => port.postMessage({ id, error: String(err) } satisfies OnnxThreadReply),
    );
  });
}

// A model that cannot load rejects unhandled, which ends the thread with the cause as its 'error' (see load()).
void serve();
