import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { RunObjects, type TrainerProgress } from '../../contracts/fine-tune';
import { LineageStore } from '../../common/store/lineage';
import { train } from '../../deploy/trainers/reference/train';
import {
  HYPERPARAMETERS,
  fineTuneClient,
  gpuNodes,
  prepare,
  readObject,
  startFineTunePlatform,
  task,
} from '../support/fine-tune';
import { uniqueId, type TestPlatform } from '../support/platform';

let p: TestPlatform;
let stop: () => Promise<void>;
const nodes = gpuNodes();

/** The first attempt trains steps 0-34 (checkpoints at 10, 20, 30) and stalls before step 35 until its node is gone. */
const HOLD_AT = 35;

beforeAll(async () => {
  ({ p, stop } = await startFineTunePlatform(20, HOLD_AT));
}, 180_000);
afterAll(async () => {
  await stop?.();
  await nodes.removeAll();
});

describe('fine-tune resumption', () => {
  it('resubmits the Job when its node is deleted mid-run and resumes from the latest checkpoint, ending with the weights of an uninterrupted run', async () => {
    const doomed = await nodes.add(1);
    const tenant = await p.createTenant('ft-resume');
    const api = fineTuneClient(p, tenant);
    const t = task(21);
    const { modelId, artifactUri, datasetUri } = await prepare(p, tenant, t);
    const hyperparameters = { ...HYPERPARAMETERS, totalSteps: 60 };
    const res = await api.post({
      baseModel: { modelId, version: 'base' },
      datasetUri,
      method: 'full',
      hyperparameters,
      resources: { gpuCount: 1, gpuProduct: nodes.product, cpu: '500m', memory: '1Gi' },
      cluster: 'local',
    });
    expect(res.statusCode).toBe(202);
    const { fineTuneId } = res.json();
    const before = await api.until(
      fineTuneId,
      (s) => s.progress?.step === HOLD_AT,
      `the first attempt at step ${HOLD_AT}`,
    );
    expect(before).toMatchObject({
      phase: 'running',
      job: { attempt: 1, node: doomed },
      progress: { checkpointStep: 30 },
    });

    // A spare node of the same product, then the node under the trainer disappears.
    const spare = await nodes.add(1);
    await nodes.k.core.deleteNode({ name: doomed });

    const done = await api.until(fineTuneId, (s) => s.phase === 'succeeded', 'succeeded after resuming', 300_000);
    expect({ phase: done.phase, reason: done.failureReason }).toEqual({ phase: 'succeeded', reason: null });
    expect(done.job).toMatchObject({ attempt: 2, node: spare });
    expect(done.resumptions).toHaveLength(1);
    const resumedFrom = done.resumptions[0]!.fromStep;
    expect(resumedFrom).toBe(30);

    // Which steps each trainer process trained: the second started at the checkpoint, so no step before it ran twice.
    const prefix = `s3://${tenant.bucket}/fine-tunes/${fineTuneId}/`;
    const progress = JSON.parse(
      (await readObject(p, `${prefix}${RunObjects.progress}`)).toString('utf8'),
    ) as TrainerProgress;
    expect(progress.segments.map((s) => s.attempt)).toEqual([1, 2]);
    const [first, second] = progress.segments as [
      TrainerProgress['segments'][number],
      TrainerProgress['segments'][number],
    ];
    // Steps 30-34 ran after the last checkpoint of the lost attempt, so they are trained again; none before 30 is.
    expect(first).toEqual({ attempt: 1, fromStep: 0, toStep: HOLD_AT });
    expect(second).toEqual({ attempt: 2, fromStep: 30, toStep: 60 });
    for (let step = 0; step < resumedFrom; step++) {
      expect(progress.segments.filter((s) => s.fromStep <= step && step < s.toStep)).toHaveLength(1);
    }

    // The same seed and hyperparameters trained without interruption (the same trainer code, in this process).
    const reference = await train(
      {
        runPrefix: `s3://${tenant.bucket}/fine-tunes/${uniqueId('uninterrupted')}/`,
        baseModelUri: artifactUri,
        datasetUri,
        method: 'full',
        hyperparameters,
        resumeFrom: null,
        attempt: 1,
        stepDelayMs: 0,
        holdAtStep: null,
      },
      p.objects,
    );
    expect(
      Buffer.compare(await readObject(p, reference.output!.uri), await readObject(p, done.result!.artifactUri)),
    ).toBe(0);

    const [entry] = await new LineageStore(p.db).entriesOf(tenant.id, modelId, done.output.version);
    expect(entry?.details).toMatchObject({ resumptions: 1, method: 'full', dataset: { sha256: t.datasetSha256 } });
  }, 420_000);
});
