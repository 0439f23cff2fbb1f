// Engine.predictSplit on Dawn with the built-in tiny model: the eval split recomputed exactly as
// training makes it (session/split.ts, by image, the run's seed), every grounding question of it
// answered with the adapter and with it switched off, labelled boxes back in original pixels,
// progress per question, cancel, and the refusals.
import { beforeAll, describe, expect, it } from 'vitest';
import { nodeGpu } from '../gpu/node.ts';
import { MemoryKV } from '../train/checkpoint.ts';
import { loadDefaultTokenizer } from '../data/tokenizer.ts';
import { syntheticGrounding } from '../data/synthetic.ts';
import type { RawImage } from '../data/image.ts';
import { taskRecords } from '../data/formats/records.ts';
import { newDataset, type DatasetMeta, type ImageRecord } from '../data/formats/types.ts';
import { DEFAULT_CONFIG, type TrainConfig } from '../config/config.ts';
import { splitByImage } from '../session/split.ts';
import { resizedSize } from '../session/checks.ts';
import { prepareExamples } from '../session/examples.ts';
import { evaluate } from '../session/eval.ts';
import type { Qwen2_5_VL } from '../model/qwen2_5_vl.ts';
import type { QwenTokenizer } from '../data/tokenizer.ts';
import { summary } from '../store/splitStats.ts';
import { Engine, type EngineDeps } from './engine.ts';
import type { PredictSplitEvent, TrainEvent } from './api.ts';

const pixels = new Map<Blob, RawImage>();
const blobOf = (img: RawImage): Blob => {
  const b = new Blob([new Uint8Array([pixels.size])], { type: 'image/png' });
  pixels.set(b, img);
  return b;
};

// 5 images stored at half their original size (scale 2), one box each; image 3 has a second question
const ds: DatasetMeta = { ...newDataset('shapes'), id: 'ds-p' };
const synth = syntheticGrounding({ count: 5, seed: 5 });
const stored = synth.map((s, i) => {
  const boxes = [{ id: `b${i}`, x1: s.box[0], y1: s.box[1], x2: s.box[2], y2: s.box[3], label: s.label, question: s.question }];
  if (i === 3) boxes.push({ id: 'b3b', x1: 1, y1: 2, x2: 20, y2: 21, label: 'corner', question: 'Where is the corner?' });
  const image: ImageRecord = {
    id: `img${i}`, datasetId: ds.id, name: `s${i}.png`, type: 'image/png', width: s.image.width, height: s.image.height,
    origWidth: s.image.width * 2, origHeight: s.image.height * 2, scale: 2, bytes: 1, order: i, addedAt: 0,
    labels: { boxes, question: '', answer: '', chosen: '', rejected: '' },
  };
  return { imageId: image.id, name: image.name, blob: blobOf(s.image), image, records: taskRecords(ds, image) };
});
const deps: EngineDeps = {
  kv: async () => kv,
  decodeImage: async (b) => pixels.get(b)!,
  loadSamples: async () => ({ dataset: ds, samples: stored }),
  lock: async () => () => {},
  defaultTokenizer: loadDefaultTokenizer,
};
let kv: MemoryKV;
let engine: Engine;
/** what the run 'rp' sent the page (its data event, its evaluation at the end) and the token ids its evaluation decoded */
const trained: TrainEvent[] = [];
const evalDecodes: number[][] = [];
const loadedOf = (e: Engine) => (e as unknown as { loaded: { model: Qwen2_5_VL; tokenizer: QwenTokenizer } }).loaded;

const config = (over: (c: TrainConfig) => void = () => {}): TrainConfig => {
  const c = structuredClone(DEFAULT_CONFIG);
  c.lora = { ...c.lora, r: 4, alpha: 8, dropout: 0 };
  c.optim = { ...c.optim, learningRate: 5e-3, lrScheduler: 'constant', warmupSteps: 0, maxSteps: 2, saveSteps: 0, seed: 7 };
  c.eval = { ...c.eval, evalSplit: 2, evalSteps: 0, evalMaxNewTokens: 6 };
  over(c);
  return c;
};

beforeAll(async () => {
  await nodeGpu();
  kv = new MemoryKV();
  engine = new Engine(deps);
  // the model first, so the run trains on it (same model, its adapter re-initialised) and its
  // greedy decodes can be seen: an SFT run generates only in its evaluation
  await engine.loadModel({ source: 'tiny' }, null);
  const model = loadedOf(engine).model, generate = model.generate;
  model.generate = async (...a) => {
    const out = await generate.apply(model, a);
    evalDecodes.push(...out.map((x) => Array.from(x)));
    return out;
  };
  const sum = await engine.train({ runId: 'rp', config: config(), data: { datasetId: ds.id } }, (e) => trained.push(e));
  model.generate = generate;
  expect(loadedOf(engine).model).toBe(model);
  expect(sum.status).toBe('done');
}, 300_000);

describe('predictions over a split', () => {
  it("predicts every grounding question of the run's eval split, adapter and base, boxes in original pixels", async () => {
    const events: PredictSplitEvent[] = [];
    // the page's settings differ (seed, split): the run's stored ones decide
    const r = await engine.predictSplit({ datasetId: ds.id, runId: 'rp', config: config((c) => ((c.optim.seed = 1), (c.eval.evalSplit = 0))), split: 'eval', adapter: true, base: true, maxNewTokens: 5 }, (e) => events.push(e));
    // the split training makes: by image name, the run's eval section and seed
    const sources = stored.flatMap((s) => s.records.map((record) => ({ where: s.name, record, images: [{ name: s.name }] })));
    const want = splitByImage(sources, config().eval, 7);
    expect(want.evalImages).toHaveLength(2);
    expect(new Set(r.questions.map((q) => q.name))).toEqual(new Set(want.evalImages));
    expect(r.questions).toHaveLength(want.eval.length);
    expect(r).toMatchObject({ cancelled: false, skipped: 0 });
    expect(events[0]).toMatchObject({ type: 'start', total: want.eval.length, images: 2, split: 'eval', method: 'sft' });
    expect(events.filter((e) => e.type === 'question').map((e) => (e as { done: number }).done)).toEqual(r.questions.map((_, i) => i + 1));
    for (const q of r.questions) {
      const img = stored.find((s) => s.name === q.name)!.image;
      expect([q.width, q.height]).toEqual([img.origWidth, img.origHeight]);
      // the labelled box, through the resized frame of the answers and back: the stored box × scale, within the frame's rounding
      const box = img.labels.boxes.find((b) => b.question === q.question)!;
      const orig = [box.x1, box.y1, box.x2, box.y2].map((v) => v * img.scale);
      const rs = resizedSize(img.width, img.height, ds.minPixels, ds.maxPixels), px = Math.max(img.origWidth / rs.width, img.origHeight / rs.height);
      q.labelled[0].forEach((v, k) => expect(Math.abs(v - orig[k])).toBeLessThanOrEqual(px)); // one resized pixel
      for (const a of [q.adapter!, q.base!]) {
        expect(typeof a.text).toBe('string');
        expect(a.parsed).toBe(a.boxes.length > 0);
        expect(a.iou).toBeGreaterThanOrEqual(0);
        expect(a.iou).toBeLessThanOrEqual(1);
        if (!a.parsed) expect(a.iou).toBe(0);
        for (const b of a.boxes) expect(b[2]).toBeLessThanOrEqual(q.width);
      }
    }
  }, 300_000);

  it('the train split and the eval split partition the whole dataset', async () => {
    const req = { datasetId: ds.id, runId: 'rp', config: config(), adapter: false, base: true, maxNewTokens: 1 };
    const [ev, tr, all] = [await engine.predictSplit({ ...req, split: 'eval' }, () => {}), await engine.predictSplit({ ...req, split: 'train' }, () => {}), await engine.predictSplit({ ...req, split: 'all' }, () => {})];
    const names = (x: typeof ev) => x.questions.map((q) => q.where);
    expect(names(tr).filter((w) => names(ev).includes(w))).toEqual([]);
    expect([...names(ev), ...names(tr)].sort()).toEqual(names(all).sort());
    expect(all.questions).toHaveLength(6);
    expect(all.questions.every((q) => q.base && !q.adapter)).toBe(true);
  }, 300_000);

  it("gives the numbers evaluate() gives on the split the CLI's path makes", async () => {
    const c = config();
    const r = await engine.predictSplit({ datasetId: ds.id, runId: 'rp', config: c, split: 'eval', adapter: true, base: false }, () => {}); // decodes evalMaxNewTokens
    // src/cli/train.ts: the records the method takes → splitByImage → prepareExamples → Run.evaluate
    const { model, tokenizer } = loadedOf(engine);
    const sources = stored.flatMap((s) => s.records.map((record) => ({ where: s.name, record, images: [{ name: s.name, image: pixels.get(s.blob)! }] })));
    const split = splitByImage(sources, c.eval, c.optim.seed);
    const examples = prepareExamples(split.eval, { method: 'sft', data: { minPixels: ds.minPixels, maxPixels: ds.maxPixels, maxLength: c.data.maxLength }, tokenizer }).examples;
    const ev = await evaluate({ model, tokenizer, examples, config: c, pixels: ds });
    expect(r.questions.map((q) => q.adapter!.text)).toEqual(ev.questions.map((q) => q.completion));
    expect(summary(r.questions, 'adapter')).toEqual({
      n: ev.questions.length, parseRate: ev.metrics['eval_grounding/parse_rate'], meanIou: ev.metrics['eval_grounding/mean_iou'],
      acc50: ev.metrics['eval_grounding/acc_iou50'], acc75: ev.metrics['eval_grounding/acc_iou75'],
    });
  }, 300_000);

  it("over the run's eval split: exactly its held-out images, and the figures of its own last evaluation", async () => {
    const data = trained.find((e): e is Extract<TrainEvent, { type: 'data' }> => e.type === 'data')!;
    const evals = trained.filter((e): e is Extract<TrainEvent, { type: 'eval' }> => e.type === 'eval');
    expect(evals.map((e) => e.step)).toEqual([2]); // evalSteps 0: at the end only
    const m = evals[0].metrics;
    // no maxNewTokens: the run's evalMaxNewTokens, as the page defaults to over a split
    const ev = await engine.predictSplit({ datasetId: ds.id, runId: 'rp', config: config(), split: 'eval', adapter: true, base: false }, () => {});
    expect(new Set(ev.questions.map((q) => q.imageId))).toEqual(new Set(data.evalImageIds));
    // the same answers, token for token, as the run's evaluation decoded (an untrained tiny model's
    // figures are mostly 0, so the texts are what shows the two decode alike)
    const tok = loadedOf(engine).tokenizer, stops = [tok.special.imEnd, tok.special.endOfText];
    const texts = evalDecodes.map((ids) => tok.decode(stops.includes(ids.at(-1)!) ? ids.slice(0, -1) : ids));
    expect(texts).toHaveLength(data.evalExamples!);
    expect(ev.questions.map((q) => q.adapter!.text)).toEqual(texts);
    expect(ev.questions).toHaveLength(data.evalExamples!);
    expect(summary(ev.questions, 'adapter')).toEqual({
      n: data.evalExamples, parseRate: m['eval_grounding/parse_rate'], meanIou: m['eval_grounding/mean_iou'], acc50: m['eval_grounding/acc_iou50'], acc75: m['eval_grounding/acc_iou75'],
    });
    // after a reload (a fresh engine on the same storage): the run's checkpoint on a freshly loaded model answers alike
    const fresh = new Engine(deps);
    expect(await fresh.useAdapter({ kind: 'run', runId: 'rp' })).toMatchObject({ runId: 'rp', step: 2 });
    const again = await fresh.predictSplit({ datasetId: ds.id, runId: 'rp', config: config(), split: 'eval', adapter: true, base: false }, () => {});
    expect(again.questions.map((q) => q.adapter!.text)).toEqual(texts);
    expect(summary(again.questions, 'adapter')).toEqual(summary(ev.questions, 'adapter'));
    // the train split: the other images, every one of them
    const tr = await engine.predictSplit({ datasetId: ds.id, runId: 'rp', config: config(), split: 'train', adapter: false, base: true, maxNewTokens: 1 }, () => {});
    expect(new Set(tr.questions.map((q) => q.imageId))).toEqual(new Set(stored.map((s) => s.imageId).filter((id) => !data.evalImageIds!.includes(id))));
    expect(tr.questions).toHaveLength(data.examples);
  }, 300_000);

  it('refuses to train or resume while predictions over a split run', async () => {
    const predict = () => engine.predictSplit({ datasetId: ds.id, config: config(), split: 'all', adapter: false, base: true, maxNewTokens: 1 }, () => {});
    const busy = /Predictions over a split are running in this tab: cancel them \(or wait for them\) first/;
    // a new run: refused before it takes the run's lock or loads anything
    let p = predict();
    await expect(engine.train({ runId: 'rx', config: config((c) => (c.eval.evalSplit = 0)), data: { datasetId: ds.id } }, () => {})).rejects.toThrow(busy);
    expect((await p).questions).toHaveLength(6);
    expect(await kv.get('run/rx/meta')).toBeUndefined();
    // a paused run (predictions may run while it is paused): Resume is refused until they end, then continues
    const events: TrainEvent[] = [];
    let onPaused!: () => void;
    const paused = new Promise<void>((r) => (onPaused = r));
    const run = engine.train({ runId: 'rq', config: config((c) => ((c.eval.evalSplit = 0), (c.optim.maxSteps = 2))), data: { datasetId: ds.id } }, (e) => {
      events.push(e);
      if (e.type === 'step' && e.step === 1) void engine.pause();
      if (e.type === 'status' && e.status === 'paused') onPaused();
    });
    await paused;
    p = predict();
    await expect(engine.resume()).rejects.toThrow(busy);
    await p;
    await engine.resume();
    const sum = await run;
    expect(sum).toMatchObject({ status: 'done', step: 2 });
    expect(events.filter((e) => e.type === 'step').map((e) => (e as { step: number }).step)).toEqual([1, 2]);
  }, 300_000);

  it('cancels after the question in progress, keeping the ones done', async () => {
    const r = await engine.predictSplit({ datasetId: ds.id, config: config(), split: 'all', adapter: true, base: false, maxNewTokens: 2 }, (e) => {
      if (e.type === 'question') engine.cancelPredictSplit();
    });
    expect(r.cancelled).toBe(true);
    expect(r.questions).toHaveLength(1);
  }, 300_000);

  it('refuses what it cannot do, saying what to choose instead', async () => {
    const req = { datasetId: ds.id, config: config((c) => (c.eval.evalSplit = 0)), adapter: true, base: true };
    await expect(engine.predictSplit({ ...req, split: 'eval' }, () => {})).rejects.toThrow(/held out no images \(eval split 0\): choose the train split or the whole dataset/);
    await expect(engine.predictSplit({ ...req, split: 'all', runId: 'nope' }, () => {})).rejects.toThrow(/Run nope has no saved settings/);
    await expect(engine.predictSplit({ ...req, split: 'all', adapter: false, base: false }, () => {})).rejects.toThrow(/Nothing to predict with/);
  });
});
