// The Trainer worker's engine on Dawn with the built-in tiny model: load (and a refused / failed load
// leaving nothing on the GPU), the estimate, training on a stored dataset with pause / resume / stop
// and checkpoints, resume after a "reload", the run lock, a NaN fault, a lost device, generation,
// adapter export / import and the cluster bundle. The browser's IndexedDB, Web Locks and image
// decoder are replaced by a MemoryKV, a Set and a Blob → pixels map.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { unzipSync } from 'fflate';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { gpu, loseDeviceForTest } from '../gpu/device.ts';
import { memory, trimPool } from '../gpu/tensor.ts';
import { MemoryKV, loadLatestCheckpoint } from '../train/checkpoint.ts';
import { Trainer, TrainingFault } from '../train/trainer.ts';
import { loadDefaultTokenizer } from '../data/tokenizer.ts';
import { syntheticGrounding } from '../data/synthetic.ts';
import type { RawImage } from '../data/image.ts';
import { taskRecords } from '../data/formats/records.ts';
import { newDataset, type DatasetMeta, type ImageRecord } from '../data/formats/types.ts';
import { readSafetensors } from '../model/safetensors.ts';
import { tinyConfigJson, tinyFiles } from '../model/tiny.ts';
import { DEFAULT_CONFIG, type TrainConfig } from '../config/config.ts';
import { Engine, type EngineDeps } from './engine.ts';
import { RUN_LOCKED, type TrainEvent } from './api.ts';

const pixels = new Map<Blob, RawImage>();
const blobOf = (img: RawImage): Blob => {
  const b = new Blob([new Uint8Array([pixels.size])], { type: 'image/png' });
  pixels.set(b, img);
  return b;
};

// A grounding dataset as the studio stores it: boxes in stored pixels, one question per box.
const ds: DatasetMeta = { ...newDataset('shapes'), id: 'ds1' };
const synth = syntheticGrounding({ count: 3, seed: 11 });
const stored = synth.map((s, i) => {
  const image: ImageRecord = {
    id: `img${i}`, datasetId: ds.id, name: `s${i}.png`, type: 'image/png', width: s.image.width, height: s.image.height,
    origWidth: s.image.width, origHeight: s.image.height, scale: 1, bytes: 1, order: i, addedAt: 0,
    labels: { boxes: [{ id: `b${i}`, x1: s.box[0], y1: s.box[1], x2: s.box[2], y2: s.box[3], label: s.label, question: s.question }], question: '', answer: '', chosen: '', rejected: '' },
  };
  return { imageId: image.id, name: image.name, blob: blobOf(s.image), image, records: taskRecords(ds, image) };
});

let kv: MemoryKV;
const held = new Set<string>();
const deps: EngineDeps = {
  kv: async () => kv,
  decodeImage: async (b) => {
    const p = pixels.get(b);
    if (!p) throw new Error('unknown test blob');
    return p;
  },
  loadSamples: async (id) => {
    if (id !== ds.id) throw new Error(`dataset ${id} not found`);
    return { dataset: ds, samples: stored };
  },
  lock: async (name) => (held.has(name) ? null : (held.add(name), () => held.delete(name))),
  defaultTokenizer: loadDefaultTokenizer,
};

const config = (over: (c: TrainConfig) => void = () => {}): TrainConfig => {
  const c = structuredClone(DEFAULT_CONFIG);
  c.lora = { ...c.lora, r: 4, alpha: 8, dropout: 0.05 };
  c.optim = { ...c.optim, learningRate: 1e-3, lrScheduler: 'constant', warmupSteps: 0, maxSteps: 6, gradAccumSteps: 1, saveSteps: 0 };
  over(c);
  return c;
};

/** Collect events; `on` runs for each (e.g. stop after step 2). */
function recorder(on: (e: TrainEvent, engine: Engine) => void, engine: Engine) {
  const events: TrainEvent[] = [];
  return { events, cb: (e: TrainEvent) => (events.push(e), on(e, engine)) };
}
const steps = (evs: TrainEvent[]) => evs.filter((e): e is Extract<TrainEvent, { type: 'step' }> => e.type === 'step');
const statuses = (evs: TrainEvent[]) => evs.filter((e) => e.type === 'status').map((e) => (e as { status: string }).status);

let engine: Engine;

beforeAll(async () => {
  await nodeGpu();
  kv = new MemoryKV();
  engine = new Engine(deps);
});
afterAll(async () => {
  await engine?.stop();
});

describe('engine: models', () => {
  it('loads the tiny model with a LoRA adapter and reports its numbers', async () => {
    const progress: string[] = [];
    const info = await engine.loadModel({ source: 'tiny' }, { r: 4, alpha: 8, dropout: 0.1, targetModules: ['q_proj', 'v_proj'], useRslora: false }, (p) => progress.push(p.phase));
    expect(info.config).toMatchObject({ layers: 2, hidden: 128, vocab: 151936 });
    // q: 4·(128+128), v: 4·(128+32) per layer, 2 layers
    expect(info.lora).toMatchObject({ modules: 4, r: 4, params: 2 * (4 * 256 + 4 * 160), scale: 2 });
    expect(info.memory.ok).toBe(true);
    expect(info.memory.text).toMatch(/weights \(BF16\): .*LoRA: 4 modules/s);
    expect(Array.isArray(info.warnings)).toBe(true); // e.g. "lora_dropout … is not applied" while the engine lacks dropout
    expect(progress).toContain('weights');
    expect(info.gpuBytes).toBeGreaterThan(0);
  });

  it('refuses, with the numbers, a model above the adapter limits; a failed load leaves nothing on the GPU', async () => {
    const limit = gpu().limits.maxStorageBufferBindingSize;
    const big = tinyConfigJson({ text: { intermediateSize: Math.ceil(limit / (128 * 2)) + 64 } });
    const cfgFile = (json: object) => new File([JSON.stringify(json)], 'config.json');
    engine['dropModel'](); // start from an empty GPU
    trimPool();
    const before = memory.live;
    await expect(engine.loadModel({ source: 'local', name: 'huge', files: [cfgFile(big)] }, null)).rejects.toThrow(/Cannot load 2-layer Qwen2.5-VL \(estimated [\d.]+ GiB.*mlp\.gate_proj\.weight needs [\d.]+ MiB in one buffer, above this adapter's limit of [\d.]+ MiB/);
    // weights cut short: the upload fails midway; every buffer it made is given back
    const files = tinyFiles();
    const st = files['model.safetensors'];
    const cut = [cfgFile(JSON.parse(new TextDecoder().decode(files['config.json']))), new File([st.slice(0, Math.floor(st.length * 0.6)) as BlobPart], 'model.safetensors')];
    await expect(engine.loadModel({ source: 'local', name: 'cut', files: cut }, { r: 4, alpha: 8, dropout: 0, targetModules: ['q_proj'], useRslora: false })).rejects.toThrow();
    expect(memory.live).toBe(before);
    expect(engine.modelInfo()).toBeNull();
  });

  it('estimates memory and time of a run on the dataset', async () => {
    const e = await engine.estimate(config(), ds.id);
    expect(e.examples).toBe(3);
    expect(e.totalSteps).toBe(6);
    expect(e.memory.ok).toBe(true);
    expect(e.memory.imageTokens).toBeGreaterThan(0);
    expect(e.flopsPerStep).toBeGreaterThan(1e6);
    expect(e.secondsPerStep).toBeGreaterThan(0);
    expect(e.timeBasis).toBe('flops');
  });
});

describe('engine: training', () => {
  it('trains on a stored dataset: steps with metrics, pause / resume / stop, checkpoints', async () => {
    const r = recorder((e, en) => {
      if (e.type === 'step' && e.step === 1) void en.pause().then(() => en.resume());
      if (e.type === 'step' && e.step === 2) void en.stop();
    }, engine);
    const sum = await engine.train({ runId: 'r1', config: config(), data: { datasetId: ds.id } }, r.cb);
    expect(sum).toMatchObject({ status: 'stopped', step: 2, totalSteps: 6, checkpointStep: 2 });
    expect(statuses(r.events)).toEqual(['loading', 'running', 'pausing', 'paused', 'running', 'stopping', 'stopped']);
    const s = steps(r.events);
    expect(s.map((x) => x.step)).toEqual([1, 2]);
    for (const x of s) {
      for (const k of ['loss', 'learning_rate', 'grad_norm', 'tokens_per_s', 'mean_token_accuracy']) expect(Number.isFinite(x.metrics[k]), k).toBe(true);
    }
    // the pause saved step 1, the stop step 2; every warning of the model reached the UI
    expect(r.events.filter((e) => e.type === 'checkpoint').map((e) => (e as { step: number }).step)).toEqual([1, 2]);
    const model = r.events.find((e) => e.type === 'model') as Extract<TrainEvent, { type: 'model' }>;
    for (const w of model.info.warnings) expect(r.events.some((e) => e.type === 'warning' && e.message.startsWith(w))).toBe(true);
    expect(r.events.find((e) => e.type === 'data')).toMatchObject({ examples: 3, minPixels: ds.minPixels, maxPixels: ds.maxPixels });
    expect((await loadLatestCheckpoint(kv, 'r1'))?.step).toBe(2);
    expect(held.size).toBe(0); // the run lock is released
  });

  it('resumes a run after a "reload" (a fresh engine) from its last checkpoint', async () => {
    const fresh = new Engine(deps);
    const r = recorder((e, en) => e.type === 'step' && e.step === 3 && void en.stop(), fresh);
    const sum = await fresh.resumeRun('r1', r.cb);
    expect(r.events.find((e) => e.type === 'resumed')).toEqual({ type: 'resumed', step: 2 });
    expect(steps(r.events).map((x) => x.step)).toEqual([3]);
    expect(sum).toMatchObject({ status: 'stopped', step: 3, checkpointStep: 3 });
    fresh['dropModel']();
  });

  it('a second holder of the run lock is refused', async () => {
    held.add('patchwork-run-r1');
    try {
      await expect(engine.train({ runId: 'r1', config: config(), data: { datasetId: ds.id } }, () => {})).rejects.toThrow(RUN_LOCKED);
    } finally {
      held.delete('patchwork-run-r1');
    }
  });

  it('a method without records of its kind fails before loading the model, naming both', async () => {
    const r = recorder(() => {}, engine);
    const sum = await engine.train({ runId: 'r-dpo', config: config((c) => (c.method = 'dpo')), data: { datasetId: ds.id } }, r.cb);
    expect(sum.status).toBe('failed');
    expect(sum.message).toMatch(/"shapes" has 3 question\/answer \(SFT\) records, but DPO trains on preference-pair/);
    expect(r.events.some((e) => e.type === 'model')).toBe(false);
  });

  it('every record is checked before step 1 (the session\'s checks): all problems at once, each named', async () => {
    const good = synth[0];
    const examples = [
      { images: [blobOf(good.image)], record: stored[0].records[0] },
      { images: [blobOf({ data: new Uint8Array(5 * 5 * 4), width: 5, height: 5, channels: 4 })], record: { kind: 'sft' as const, question: 'q', answer: 'a' } },
      { images: [blobOf(good.image)], record: { kind: 'sft' as const, question: 'q', answer: '{"bbox_2d": [10, 20, 5000, 60]}' } },
    ];
    const r = recorder(() => {}, engine);
    const sum = await engine.train({ runId: 'r-bad', config: config((c) => (c.optim.maxSteps = 1)), data: { examples } }, r.cb);
    expect(sum.status).toBe('failed');
    expect(sum.message).toMatch(/^2 of 3 training records cannot be trained on; fix them, or choose "Skip them and train on the rest"/);
    expect(sum.invalidRecords).toBe(2); // the Train panel offers the button on this
    expect(sum.message).toMatch(/example 2: image 5x5 \(HxW\) is too small/);
    expect(sum.message).toMatch(/example 3: box \[10, 20, 5000, 60\] is outside the/);
    expect(steps(r.events)).toHaveLength(0);

    const r2 = recorder(() => {}, engine);
    const ok = await engine.train({ runId: 'r-skip', config: config((c) => (c.optim.maxSteps = 1)), data: { examples }, skipInvalid: true }, r2.cb);
    expect(ok.status).toBe('done');
    expect(r2.events.find((e) => e.type === 'data')).toMatchObject({ examples: 1, skipped: 2 });
    const warnings = r2.events.filter((e) => e.type === 'warning').map((e) => (e as { message: string }).message);
    expect(warnings.filter((w) => /^Left out example [23]:/.test(w))).toHaveLength(2);
  });

  it('an absurd learning rate is refused before anything loads, naming the field', async () => {
    const r = recorder(() => {}, engine);
    const sum = await engine.train({ runId: 'r-lr', config: config((c) => (c.optim.learningRate = 1e30)), data: { datasetId: ds.id } }, r.cb);
    expect(sum.status).toBe('failed');
    expect(sum.message).toMatch(/optim\.learningRate: The learning rate must be a number in \(0, 1\).*Got 1e\+30/);
    expect(await loadLatestCheckpoint(kv, 'r-lr')).toBeUndefined();
  });

  it('a training fault (NaN) stops the run with the message; checkpoints after its last good step are rolled back', async () => {
    const r = recorder(() => {}, engine);
    // the fault itself is the trainer's (train/trainer.test.ts); here: what the engine does with it
    const real = Trainer.prototype.trainStep;
    let calls = 0;
    const spy = vi.spyOn(Trainer.prototype, 'trainStep').mockImplementation(async function (this: Trainer) {
      // a fault whose cause began after step 1 (as the loss-spike rule reports it): step 2's checkpoint is suspect
      if (++calls === 3) throw new TrainingFault('The loss became NaN at step 3: training stopped.', 'loss-nonfinite', 3, 1);
      return real.call(this);
    });
    try {
      const sum = await engine.train({ runId: 'r-nan', config: config(), data: { datasetId: ds.id }, checkpointEvery: 1 }, r.cb);
      expect(sum.status).toBe('failed');
      expect(sum.message).toMatch(/loss became NaN/);
      expect(sum.message).toMatch(/last checkpoint: step 1/);
      expect(sum.checkpointStep).toBe(1);
      const ck = await loadLatestCheckpoint(kv, 'r-nan');
      expect(ck?.step).toBe(1); // Trainer.rollback(kv, fault) deleted step 2's
      expect(Object.values(ck!.lora).every((t) => t.data.every(Number.isFinite))).toBe(true);
      expect(statuses(r.events).at(-1)).toBe('failed');
    } finally {
      spy.mockRestore();
    }
  });
});

describe('engine: adapters and generation', () => {
  it('exports a run from its checkpoint in both layouts, imports it, and generates with and without it', async () => {
    const files = await engine.exportAdapter('peft', 'r1');
    const st = readSafetensors(files.find((f) => f.name === 'adapter_model.safetensors')!.bytes);
    const a = st.tensors.get('base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight');
    const b = st.tensors.get('base_model.model.model.language_model.layers.0.self_attn.k_proj.lora_B.weight');
    expect(a?.shape).toEqual([4, 128]);
    expect(b?.shape).toEqual([32, 4]);
    expect(st.tensors.size).toBe(2 * 7 * 2);
    const cfg = JSON.parse(new TextDecoder().decode(files.find((f) => f.name === 'adapter_config.json')!.bytes));
    expect(cfg).toMatchObject({ r: 4, lora_alpha: 8, peft_type: 'LORA', base_model_name_or_path: 'patchwork-builtin-tiny' });
    const legacy = readSafetensors((await engine.exportAdapter('peft-legacy', 'r1'))[0].bytes);
    expect(legacy.tensors.has('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight')).toBe(true);

    const info = await engine.importAdapter(files.map((f) => ({ name: `run1/${f.name}`, bytes: f.bytes })));
    expect(info).toMatchObject({ label: 'imported: run1', modules: 14, r: 4 });
    // the live adapter exports to the same tensors
    const again = readSafetensors((await engine.exportAdapter('peft'))[0].bytes);
    expect([...again.tensors.keys()].sort()).toEqual([...st.tensors.keys()].sort());

    const s = stored[0];
    const opts = { maxNewTokens: 6, minPixels: ds.minPixels, maxPixels: ds.maxPixels, original: [{ width: s.image.width * 2, height: s.image.height * 2 }] };
    const on = await engine.generate([s.blob], s.records[0].kind === 'sft' ? s.records[0].question : '', opts);
    const off = await engine.generate([s.blob], 'Where is it?', { ...opts, adapter: false });
    for (const g of [on, off]) {
      expect(typeof g.text).toBe('string');
      expect(g.tokens).toBeGreaterThan(0);
      expect(g.tokens).toBeLessThanOrEqual(6);
      expect(g.resized[0].width % 28).toBe(0);
    }
    const u = await engine.useAdapter({ kind: 'run', runId: 'r1' });
    expect(u).toMatchObject({ runId: 'r1', step: 3, modules: 14 });
  });

  it('continues training from an imported adapter (its LoRA settings win over the Train settings)', async () => {
    const files = await engine.exportAdapter('peft', 'r1'); // r = 4
    await engine.importAdapter(files);
    const r = recorder(() => {}, engine);
    const sum = await engine.train({ runId: 'r-imp', config: config((c) => ((c.lora.r = 2), (c.optim.maxSteps = 1))), data: { datasetId: ds.id }, startFrom: 'imported' }, r.cb);
    expect(sum).toMatchObject({ status: 'done', step: 1, checkpointStep: 1 });
    expect((r.events.find((e) => e.type === 'model') as Extract<TrainEvent, { type: 'model' }>).info.lora?.r).toBe(4);
    const st = readSafetensors((await engine.exportAdapter('peft', 'r-imp'))[0].bytes);
    expect(st.tensors.get('base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight')?.shape).toEqual([4, 128]);
  });

  it('maps predicted boxes back to original pixels', async () => {
    // The engine maps what the model writes; check the mapping with a model answer we know.
    const { boxToOriginal } = await import('../data/bbox.ts');
    expect(boxToOriginal([28, 28, 56, 56], { width: 112, height: 84 }, { width: 224, height: 168 })).toEqual([56, 56, 112, 112]);
  });

  it('builds the cluster bundle of the dataset', async () => {
    const b = await engine.clusterBundle(config(), ds.id);
    const files = unzipSync(b.bytes);
    expect(Object.keys(files)).toEqual(expect.arrayContaining(['train.py', 'README.md', 'accelerate_config.yaml', 'train.jsonl', 'images/s0.png']));
    const lines = new TextDecoder().decode(files['train.jsonl']).trim().split('\n');
    expect(lines.length).toBe(3);
    expect(JSON.parse(lines[0]).messages[1].content[0].text).toMatch(/bbox_2d/);
    expect(b.name).toMatch(/^shapes-cluster-sft\.zip$/);
  });
});

describe('engine: lost device', () => {
  it('reports a lost device mid-run; after a new device, Resume continues from the last checkpoint', async () => {
    // lost right after the checkpoint of step 2: step 3 fails
    const r = recorder((e) => e.type === 'checkpoint' && e.step === 2 && loseDeviceForTest(), engine);
    const sum = await engine.train({ runId: 'r-lost', config: config(), data: { datasetId: ds.id }, checkpointEvery: 1 }, r.cb);
    expect(sum.status).toBe('device-lost');
    expect(sum.message).toMatch(/The GPU device was lost at step 3 .*Resume continues from the checkpoint of step 2/);
    expect(engine.modelInfo()).toBeNull();
    await closeGpu();
    await nodeGpu();
    const r2 = recorder((e, en) => e.type === 'step' && e.step === 3 && void en.stop(), engine);
    const again = await engine.resumeRun('r-lost', r2.cb);
    expect(r2.events.find((e) => e.type === 'resumed')).toEqual({ type: 'resumed', step: 2 });
    expect(again).toMatchObject({ status: 'stopped', step: 3 });
  });
});
