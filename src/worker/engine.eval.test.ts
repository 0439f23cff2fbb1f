// The studio's held-out evaluation in the engine (Dawn, the tiny model): the dataset is split by
// image before the checks, the split is evaluated every eval.evalSteps steps and at the end (progress
// first, then trl's eval_ metrics), Stop cuts an evaluation short and Resume redoes it, an impossible
// split is refused up front, and a resumed run keeps the images it held out: by the seed with the
// same dataset, by its saved list when the dataset changed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeGpu } from '../gpu/node.ts';
import { MemoryKV } from '../train/checkpoint.ts';
import { loadDefaultTokenizer } from '../data/tokenizer.ts';
import { syntheticGrounding } from '../data/synthetic.ts';
import type { RawImage } from '../data/image.ts';
import { taskRecords } from '../data/formats/records.ts';
import { newDataset, type DatasetMeta, type ImageRecord } from '../data/formats/types.ts';
import { DEFAULT_CONFIG, type TrainConfig } from '../config/config.ts';
import { splitByImage } from '../session/split.ts';
import { Engine, type EngineDeps } from './engine.ts';
import type { TrainEvent } from './api.ts';

const pixels = new Map<Blob, RawImage>();
const blobOf = (img: RawImage): Blob => {
  const b = new Blob([new Uint8Array([pixels.size])], { type: 'image/png' });
  pixels.set(b, img);
  return b;
};

// 5 images as the studio stores them; the first carries two questions (both must land on one side)
const ds: DatasetMeta = { ...newDataset('shapes'), id: 'ds-eval' };
const synth = syntheticGrounding({ count: 5, seed: 3 });
const samples = synth.map((s, i) => {
  const box = (k: number) => ({ id: `b${i}.${k}`, x1: s.box[0], y1: s.box[1], x2: s.box[2], y2: s.box[3], label: s.label, question: k ? `${s.question} (again)` : s.question });
  const image: ImageRecord = {
    id: `img${i}`, datasetId: ds.id, name: `s${i}.png`, type: 'image/png', width: s.image.width, height: s.image.height,
    origWidth: s.image.width, origHeight: s.image.height, scale: 1, bytes: 1, order: i, addedAt: 0,
    labels: { boxes: i === 0 ? [box(0), box(1)] : [box(0)], question: '', answer: '', chosen: '', rejected: '' },
  };
  return { imageId: image.id, name: image.name, blob: blobOf(s.image), image, records: taskRecords(ds, image) };
});
let shown = samples.slice(0, 4); // what loadSamples returns (a test adds the fifth image later)

let kv: MemoryKV;
const held = new Set<string>();
const deps: EngineDeps = {
  kv: async () => kv,
  decodeImage: async (b) => pixels.get(b)!,
  loadSamples: async () => ({ dataset: ds, samples: shown }),
  lock: async (name) => (held.has(name) ? null : (held.add(name), () => held.delete(name))),
  defaultTokenizer: loadDefaultTokenizer,
};

const config = (over: Partial<TrainConfig['eval']> = {}): TrainConfig => {
  const c = structuredClone(DEFAULT_CONFIG);
  c.lora = { ...c.lora, r: 4, alpha: 8, dropout: 0 };
  c.optim = { ...c.optim, learningRate: 1e-3, lrScheduler: 'constant', warmupSteps: 0, maxSteps: 4, saveSteps: 0 };
  c.eval = { evalSplit: 1, evalSteps: 2, evalMaxNewTokens: 6, ...over };
  return c;
};

type Of<T extends TrainEvent['type']> = Extract<TrainEvent, { type: T }>;
const of = <T extends TrainEvent['type']>(evs: TrainEvent[], t: T) => evs.filter((e): e is Of<T> => e.type === t);

let engine: Engine;
beforeAll(async () => {
  await nodeGpu();
  kv = new MemoryKV();
  engine = new Engine(deps);
});
afterAll(async () => {
  await engine?.stop();
});

describe('engine: the held-out evaluation', () => {
  let firstHeld: string[] = [];

  it('splits by image before the checks, and Stop cuts the evaluation after step 2 short', { timeout: 240_000 }, async () => {
    const evs: TrainEvent[] = [];
    // Stop as soon as the evaluation after step 2 starts: it ends between examples, the run is stopped
    const sum = await engine.train({ runId: 'ev1', config: config(), data: { datasetId: ds.id } }, (e) => {
      evs.push(e);
      if (e.type === 'eval-progress' && e.step === 2) void engine.stop();
    });
    expect(sum).toMatchObject({ status: 'stopped', step: 2, checkpointStep: 2 });
    const data = of(evs, 'data')[0];
    // 4 images, 5 questions: one image held out with all its questions
    expect(data.evalImages).toHaveLength(1);
    expect(data.datasetImages).toBe(4);
    const heldName = data.evalImages![0];
    const heldQuestions = shown.find((s) => s.name === heldName)!.records.length;
    expect(data.evalExamples).toBe(heldQuestions);
    expect(data.examples).toBe(5 - heldQuestions);
    expect(data.evalImageIds).toEqual([shown.find((s) => s.name === heldName)!.imageId]);
    // it is the seeded split of session/split.ts
    expect(splitByImage(shown.flatMap((s) => s.records.map((record) => ({ where: s.name, record, images: [{ name: s.name }] }))), config().eval, config().optim.seed).evalImages).toEqual([heldName]);
    firstHeld = data.evalImages!;
    const seq = evs.filter((e) => ['step', 'eval', 'eval-progress'].includes(e.type)).map((e) => `${e.type}:${(e as { step: number }).step}`);
    expect(seq).toEqual(['step:1', 'step:2', 'eval-progress:2']);
    expect((await kv.get<{ lastEvalStep?: number }>('run/ev1/meta'))!.lastEvalStep).toBeUndefined();
  });

  it('a resume keeps the split, evaluates the step whose evaluation was cut short first, then every evalSteps and at the end', { timeout: 240_000 }, async () => {
    const fresh = new Engine(deps); // a reload
    const evs: TrainEvent[] = [];
    const sum = await fresh.resumeRun('ev1', (e) => evs.push(e));
    expect(sum).toMatchObject({ status: 'done', step: 4 });
    expect(of(evs, 'resumed')[0].step).toBe(2);
    expect(of(evs, 'data')[0].evalImages).toEqual(firstHeld);
    const seq = evs.filter((e) => ['step', 'eval', 'eval-progress'].includes(e.type)).map((e) => `${e.type}:${(e as { step: number }).step}`);
    expect(seq.filter((x, i) => x !== seq[i - 1])).toEqual(['eval-progress:2', 'eval:2', 'step:3', 'step:4', 'eval-progress:4', 'eval:4']);
    const n = of(evs, 'data')[0].evalExamples!;
    const prog = of(evs, 'eval-progress').filter((e) => e.step === 2);
    expect(prog[0]).toEqual({ type: 'eval-progress', step: 2, done: 0, total: n });
    expect(prog.at(-1)).toEqual({ type: 'eval-progress', step: 2, done: n, total: n });
    // SFT on box answers: eval loss and token accuracy, and the grounding scores of the greedy answers
    for (const ev of of(evs, 'eval')) {
      expect(Object.keys(ev.metrics).sort()).toEqual(['eval_grounding/acc_iou50', 'eval_grounding/acc_iou75', 'eval_grounding/mean_iou', 'eval_grounding/parse_rate', 'eval_loss', 'eval_mean_token_accuracy']);
      expect(ev.metrics.eval_loss).toBeGreaterThan(0);
      for (const k of ['eval_grounding/parse_rate', 'eval_grounding/mean_iou', 'eval_grounding/acc_iou50']) expect(ev.metrics[k]).toBeGreaterThanOrEqual(0);
    }
    // training moved the adapter between the two evaluations
    const [e2, e4] = of(evs, 'eval');
    expect(e4.metrics.eval_loss).not.toBe(e2.metrics.eval_loss);
    expect((await kv.get<{ lastEvalStep?: number }>('run/ev1/meta'))!.lastEvalStep).toBe(4);
  });

  it('a resume after the dataset changed keeps the images held out at the start', { timeout: 240_000 }, async () => {
    const evs: TrainEvent[] = [];
    let ckStep = 0;
    const sum = await engine.train({ runId: 'ev2', config: config({ evalSplit: 0.5, evalSteps: 0 }), data: { datasetId: ds.id } }, (e) => {
      evs.push(e);
      if (e.type === 'step' && e.step === 1) void engine.stop();
      if (e.type === 'checkpoint') ckStep = e.step;
    });
    expect(sum.status).toBe('stopped');
    expect(ckStep).toBe(1);
    expect(of(evs, 'eval')).toEqual([]); // evalSteps 0: only at the end
    const before = of(evs, 'data')[0].evalImages!;
    expect(before).toHaveLength(2);
    shown = samples; // a fifth image was added
    try {
      const fresh = new Engine(deps);
      const evs2: TrainEvent[] = [];
      const r = recorderStop(evs2, fresh, 2);
      await fresh.resumeRun('ev2', r);
      const after = of(evs2, 'data')[0].evalImages!;
      expect(new Set(after)).toEqual(new Set(before));
      const fresh5 = splitByImage(samples.flatMap((s) => s.records.map((record) => ({ where: s.name, record, images: [{ name: s.name }] }))), config({ evalSplit: 0.5 }).eval, 42).evalImages;
      const changed = fresh5.length !== before.length || fresh5.some((k) => !before.includes(k));
      expect(of(evs2, 'warning').some((w) => /The dataset changed since this run started: it keeps the 2 held-out images/.test(w.message))).toBe(changed);
    } finally {
      shown = samples.slice(0, 4);
    }
  });

  it('evaluating does not change the training: the same steps as a run on the train side alone', { timeout: 240_000 }, async () => {
    const losses = (evs: TrainEvent[]) => of(evs, 'step').map((e) => [e.metrics.loss, e.metrics.grad_norm]);
    const a: TrainEvent[] = [];
    await engine.train({ runId: 'ev4', config: config(), data: { datasetId: ds.id } }, (e) => a.push(e));
    expect(of(a, 'eval').map((e) => e.step)).toEqual([2, 4]);
    const heldName = of(a, 'data')[0].evalImages![0];
    // the same records and images, in the same order, without the held-out image and without evaluation
    const rest = shown.filter((s) => s.name !== heldName).flatMap((s) => s.records.map((record) => ({ images: [s.blob], record })));
    const b: TrainEvent[] = [];
    await engine.train({ runId: 'ev5', config: config({ evalSplit: 0 }), data: { examples: rest, minPixels: ds.minPixels, maxPixels: ds.maxPixels } }, (e) => b.push(e));
    expect(of(b, 'eval')).toEqual([]);
    expect(losses(a)).toHaveLength(4);
    expect(losses(a)).toEqual(losses(b));
  });

  it('refuses, before any step, a split that leaves no image to train on', async () => {
    const evs: TrainEvent[] = [];
    const sum = await engine.train({ runId: 'ev3', config: config({ evalSplit: 4 }), data: { datasetId: ds.id } }, (e) => evs.push(e));
    expect(sum.status).toBe('failed');
    expect(sum.message).toMatch(/eval\.evalSplit: An eval split of 4 holds out 4 of the dataset's 4 images, leaving none to train on: hold out at most 3/);
    expect(of(evs, 'step')).toEqual([]);
  });
});

/** An event callback that stops the run after step `at`. */
function recorderStop(evs: TrainEvent[], en: Engine, at: number) {
  return (e: TrainEvent) => {
    evs.push(e);
    if (e.type === 'step' && e.step === at) void en.stop();
  };
}
