/**
 * Reference trainer: the trainer contract of contracts/fine-tune.ts (TrainerEnv, RunObjects, TrainerProgress) on
 * llmhub-mlp models, in plain numerical code so CI trains for real without torch. Plain SGD, so a checkpoint is the
 * trainable tensors alone; every random choice derives from (seed, step), so resuming from the checkpoint of step k
 * gives bit-identical final weights to an uninterrupted run.
 *
 *   LLMHUB_RUN_PREFIX=s3://… LLMHUB_BASE_MODEL_URI=s3://… LLMHUB_DATASET_URI=s3://… LLMHUB_METHOD=lora \
 *   LLMHUB_HYPERPARAMETERS='{…}' [LLMHUB_RESUME_FROM=s3://…] node --import tsx deploy/trainers/reference/train.ts
 *
 * S3: S3_ENDPOINT, S3_REGION, and the AWS SDK's usual credential chain (AWS_SHARED_CREDENTIALS_FILE in the Job).
 * Exit codes: 0 done, 2 bad input (model, dataset, hyperparameters), 1 anything else.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  RunObjects,
  TrainerEnv,
  type FineTuneMethod,
  type Hyperparameters,
  type TrainerProgress,
} from '../../../contracts/fine-tune';
import {
  activations,
  decodeMlp,
  encodeMlp,
  meanSquaredError,
  MlpFormatError,
  parseDataset,
  type Example,
  type Mlp,
} from './mlp';
import { objectUri, parseObjectUri, S3ObjectStore, type ObjectStore } from '../../../common/objectstore';
import { decodeSafetensors, encodeSafetensors, type F32Tensor } from './safetensors';

export interface TrainSettings {
  runPrefix: string;
  baseModelUri: string;
  datasetUri: string;
  method: FineTuneMethod;
  hyperparameters: Hyperparameters;
  resumeFrom: string | null;
  attempt: number;
  /** Reference trainer only: a pause per step, so tests can watch a run of a tiny model. */
  stepDelayMs: number;
  /**
   * Reference trainer only: the first attempt stops making progress before this step (as if stuck) until its process
   * is killed, so a test can take its node away while it is certainly mid-run, after a checkpoint.
   */
  holdAtStep: number | null;
}

class BadInput extends Error {}

/** A hash of (seed, a, b) to [0, 1): the same numbers on every machine and every resume. */
function random(seed: number, a: number, b: number): number {
  let h = (seed ^ Math.imul(a + 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x7f4a7c15, 0xc2b2ae35)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  return h / 2 ** 32;
}

/** int8 fake quantisation per output row (QLoRA's frozen base, as the forward pass sees it). */
function fakeQuantise(l: Mlp[number]): Float32Array {
  const out = new Float32Array(l.weight.length);
  for (let o = 0; o < l.outputs; o++) {
    let max = 0;
    for (let i = 0; i < l.inputs; i++) max = Math.max(max, Math.abs(l.weight[o * l.inputs + i]!));
    const scale = max / 127 || 1;
    for (let i = 0; i < l.inputs; i++)
      out[o * l.inputs + i] = Math.max(-127, Math.min(127, Math.round(l.weight[o * l.inputs + i]! / scale))) * scale;
  }
  return out;
}

/** What one method trains and how it turns into a complete model. */
interface Trainable {
  tensors: Record<string, F32Tensor>;
  /** The model the forward pass uses now (adapters merged). */
  effective(): Mlp;
  /** Applies one SGD step from the gradients of the effective weights and biases. */
  step(dW: Float64Array[], dB: Float64Array[], lr: number): void;
}

function trainableOf(base: Mlp, method: FineTuneMethod, hp: Hyperparameters): Trainable {
  if (method === 'full') {
    const tensors: Record<string, F32Tensor> = {};
    base.forEach((l, i) => {
      tensors[`layers.${i}.weight`] = { shape: [l.outputs, l.inputs], data: Float32Array.from(l.weight) };
      tensors[`layers.${i}.bias`] = { shape: [l.outputs], data: Float32Array.from(l.bias) };
    });
    return {
      tensors,
      effective: () =>
        base.map((l, i) => ({
          ...l,
          weight: tensors[`layers.${i}.weight`]!.data,
          bias: tensors[`layers.${i}.bias`]!.data,
        })),
      step(dW, dB, lr) {
        base.forEach((_, i) => {
          const w = tensors[`layers.${i}.weight`]!.data;
          const b = tensors[`layers.${i}.bias`]!.data;
          for (let j = 0; j < w.length; j++) w[j] = w[j]! - lr * dW[i]![j]!;
          for (let j = 0; j < b.length; j++) b[j] = b[j]! - lr * dB[i]![j]!;
        });
      },
    };
  }
  // LoRA: W = W0 + (alpha / r)·B·A with B = 0 at the start (the model starts as the base); biases stay frozen.
  const r = hp.loraRank;
  const scale = hp.loraAlpha / r;
  const frozen = base.map((l) => (method === 'qlora' ? fakeQuantise(l) : l.weight));
  const tensors: Record<string, F32Tensor> = {};
  base.forEach((l, i) => {
    const a = new Float32Array(r * l.inputs);
    for (let j = 0; j < a.length; j++) a[j] = (random(hp.seed, -1 - i, j) * 2 - 1) / Math.sqrt(l.inputs);
    tensors[`lora.${i}.A`] = { shape: [r, l.inputs], data: a };
    tensors[`lora.${i}.B`] = { shape: [l.outputs, r], data: new Float32Array(l.outputs * r) };
  });
  return {
    tensors,
    effective: () =>
      base.map((l, i) => {
        const a = tensors[`lora.${i}.A`]!.data;
        const b = tensors[`lora.${i}.B`]!.data;
        const w = new Float32Array(l.weight.length);
        for (let o = 0; o < l.outputs; o++) {
          for (let c = 0; c < l.inputs; c++) {
            let delta = 0;
            for (let k = 0; k < r; k++) delta += b[o * r + k]! * a[k * l.inputs + c]!;
            w[o * l.inputs + c] = frozen[i]![o * l.inputs + c]! + scale * delta;
          }
        }
        return { ...l, weight: w };
      }),
    step(dW, _dB, lr) {
      base.forEach((l, i) => {
        const a = tensors[`lora.${i}.A`]!.data;
        const b = tensors[`lora.${i}.B`]!.data;
        const g = dW[i]!;
        // dL/dA = s·Bᵀ·dW and dL/dB = s·dW·Aᵀ, both from the weights before this step.
        const dA = new Float64Array(a.length);
        const dB = new Float64Array(b.length);
        for (let o = 0; o < l.outputs; o++) {
          for (let c = 0; c < l.inputs; c++) {
            const gi = g[o * l.inputs + c]!;
            if (gi === 0) continue;
            for (let k = 0; k < r; k++) {
              dA[k * l.inputs + c] = dA[k * l.inputs + c]! + scale * b[o * r + k]! * gi;
              dB[o * r + k] = dB[o * r + k]! + scale * gi * a[k * l.inputs + c]!;
            }
          }
        }
        for (let j = 0; j < a.length; j++) a[j] = a[j]! - lr * dA[j]!;
        for (let j = 0; j < b.length; j++) b[j] = b[j]! - lr * dB[j]!;
      });
    },
  };
}

/** Mean-squared-error gradients of a batch with respect to each layer's weights and biases; returns the batch loss. */
function gradients(mlp: Mlp, batch: Example[]): { loss: number; dW: Float64Array[]; dB: Float64Array[] } {
  const dW = mlp.map((l) => new Float64Array(l.weight.length));
  const dB = mlp.map((l) => new Float64Array(l.outputs));
  let loss = 0;
  const outputs = mlp.at(-1)!.outputs;
  const norm = batch.length * outputs;
  for (const ex of batch) {
    const acts = activations(mlp, ex.x);
    let delta = new Float64Array(outputs);
    const y = acts.at(-1)!;
    for (let o = 0; o < outputs; o++) {
      const e = y[o]! - ex.y[o]!;
      loss += e * e;
      delta[o] = (2 * e) / norm;
    }
    for (let li = mlp.length - 1; li >= 0; li--) {
      const l = mlp[li]!;
      const input = acts[li]!;
      const back = new Float64Array(l.inputs);
      for (let o = 0; o < l.outputs; o++) {
        const d = delta[o]!;
        dB[li]![o] = dB[li]![o]! + d;
        for (let i = 0; i < l.inputs; i++) {
          dW[li]![o * l.inputs + i] = dW[li]![o * l.inputs + i]! + d * input[i]!;
          back[i] = back[i]! + d * l.weight[o * l.inputs + i]!;
        }
      }
      // Through the tanh of the layer below (its output is this layer's input).
      if (li > 0) for (let i = 0; i < l.inputs; i++) back[i] = back[i]! * (1 - input[i]! ** 2);
      delta = back;
    }
  }
  return { loss: loss / norm, dW, dB };
}

const readBytes = async (store: ObjectStore, uri: string): Promise<Buffer> => {
  const ref = parseObjectUri(uri);
  if (!(await store.head(ref))) throw new BadInput(`${uri} does not exist`);
  const chunks: Buffer[] = [];
  for await (const c of await store.getStream(ref)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
};

/** Trains and writes checkpoints, progress.json and the merged model under the run prefix; returns the final progress. */
export async function train(s: TrainSettings, store: ObjectStore): Promise<TrainerProgress> {
  const hp = s.hyperparameters;
  const prefix = parseObjectUri(s.runPrefix.endsWith('/') ? s.runPrefix : `${s.runPrefix}/`);
  const at = (name: string) => ({ bucket: prefix.bucket, key: `${prefix.key}${name}` });
  let base: Mlp;
  let rows: Example[];
  try {
    base = decodeMlp(await readBytes(store, s.baseModelUri));
    rows = parseDataset((await readBytes(store, s.datasetUri)).toString('utf8'), base);
  } catch (err) {
    if (err instanceof MlpFormatError || err instanceof SyntaxError) throw new BadInput(err.message);
    throw err;
  }
  // A seeded split: the eval rows are the same for every attempt of the run.
  const order = rows.map((_, i) => i).sort((a, b) => random(hp.seed, -1000, a) - random(hp.seed, -1000, b) || a - b);
  const evalCount = Math.min(rows.length - 1, Math.floor(rows.length * hp.evalFraction));
  const evalRows = order.slice(0, evalCount).map((i) => rows[i]!);
  const trainRows = order.slice(evalCount).map((i) => rows[i]!);
  if (trainRows.length === 0) throw new BadInput('the dataset has no training rows');

  const model = trainableOf(base, s.method, hp);
  let progress: TrainerProgress = {
    step: 0,
    totalSteps: hp.totalSteps,
    loss: [],
    evalLoss: [],
    checkpoint: null,
    segments: [],
    output: null,
  };
  if (s.resumeFrom) {
    const ckpt = decodeSafetensors(await readBytes(store, s.resumeFrom));
    for (const [name, t] of Object.entries(model.tensors)) {
      const saved = ckpt.tensors[name];
      if (!saved || saved.data.length !== t.data.length)
        throw new BadInput(`checkpoint ${s.resumeFrom} does not hold ${name} of this run`);
      t.data.set(saved.data);
    }
    const step = Number(ckpt.metadata.step);
    const before = (await store.head(at(RunObjects.progress)))
      ? (JSON.parse((await readBytes(store, objectUri(at(RunObjects.progress)))).toString('utf8')) as TrainerProgress)
      : progress;
    // What happened after the checkpoint is trained again, so its loss points are dropped; the segments stay as they were.
    progress = {
      ...before,
      step,
      loss: before.loss.filter(([k]) => k <= step),
      evalLoss: before.evalLoss.filter(([k]) => k <= step),
      checkpoint: { step, uri: s.resumeFrom },
      output: null,
    };
  }
  const segment = { attempt: s.attempt, fromStep: progress.step, toStep: progress.step };
  progress.segments = [...progress.segments, segment];
  const writeProgress = () => store.put(at(RunObjects.progress), JSON.stringify(progress), 'application/json');
  await writeProgress();

  let lastWrite = Date.now();
  for (let step = progress.step; step < hp.totalSteps; step++) {
    if (step === s.holdAtStep && s.attempt === 1) {
      await writeProgress();
      // The timer keeps the process alive; only a kill ends it.
      await new Promise(() => setInterval(() => undefined, 60_000));
    }
    const batch = Array.from(
      { length: hp.batchSize },
      (_, j) => trainRows[Math.floor(random(hp.seed, step, j) * trainRows.length)]!,
    );
    const { loss, dW, dB } = gradients(model.effective(), batch);
    model.step(dW, dB, hp.learningRate);
    progress.step = step + 1;
    segment.toStep = step + 1;
    progress.loss.push([step + 1, loss]);
    if ((step + 1) % hp.checkpointEverySteps === 0 || step + 1 === hp.totalSteps) {
      const ckpt = at(RunObjects.checkpoint(step + 1));
      await store.put(ckpt, encodeSafetensors(model.tensors, { step: String(step + 1), method: s.method }));
      if (evalRows.length) progress.evalLoss.push([step + 1, meanSquaredError(model.effective(), evalRows)]);
      progress.checkpoint = { step: step + 1, uri: objectUri(ckpt) };
      await writeProgress();
      lastWrite = Date.now();
    } else if (Date.now() - lastWrite > 1_000) {
      await writeProgress();
      lastWrite = Date.now();
    }
    if (s.stepDelayMs > 0) await sleep(s.stepDelayMs);
  }
  const out = at(RunObjects.output);
  await store.put(out, encodeMlp(model.effective()));
  progress.output = { uri: objectUri(out) };
  await writeProgress();
  return progress;
}

export function settingsFromEnv(env: NodeJS.ProcessEnv): TrainSettings {
  const need = (name: string): string => {
    const v = env[name];
    if (!v) throw new BadInput(`${name} is not set`);
    return v;
  };
  const method = need(TrainerEnv.method) as FineTuneMethod;
  if (!['lora', 'qlora', 'full'].includes(method))
    throw new BadInput(`${TrainerEnv.method} '${method}' is not lora, qlora or full`);
  return {
    runPrefix: need(TrainerEnv.runPrefix),
    baseModelUri: need(TrainerEnv.baseModelUri),
    datasetUri: need(TrainerEnv.datasetUri),
    method,
    hyperparameters: JSON.parse(need(TrainerEnv.hyperparameters)) as Hyperparameters,
    resumeFrom: env[TrainerEnv.resumeFrom] || null,
    attempt: Number(env[TrainerEnv.attempt] ?? 1),
    stepDelayMs: Number(env.LLMHUB_REFERENCE_STEP_DELAY_MS ?? 0),
    holdAtStep: env.LLMHUB_REFERENCE_HOLD_AT_STEP ? Number(env.LLMHUB_REFERENCE_HOLD_AT_STEP) : null,
  };
}

if (require.main === module) {
  // A container's PID 1 gets no default action for SIGTERM: without a handler a deleted pod's trainer would run on
  // through the whole grace period until the kubelet's SIGKILL. Work since the last checkpoint is retrained anyway.
  process.on('SIGTERM', () => process.exit(143));
  const store = new S3ObjectStore({
    endpoint: process.env.S3_ENDPOINT,
    region: process.env.S3_REGION ?? 'us-east-1',
    forcePathStyle: process.env.S3_FORCE_PATH_STYLE !== 'false',
  });
  (async () => {
    const p = await train(settingsFromEnv(process.env), store);
    console.log(JSON.stringify({ done: true, step: p.step, loss: p.loss.at(-1)?.[1], output: p.output?.uri }));
  })().catch((err: unknown) => {
    console.error(err);
    process.exit(err instanceof BadInput ? 2 : 1);
  });
}
