// The GPU model: log-probs against the CPU reference, backward (finite differences, recompute,
// accumulation, the stack of saved forwards), the adapter round trip, and bad input.
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { memory, readMany, write } from '../gpu/tensor.ts';
import { dirSource } from './sources/node.ts';
import { memorySource, type ModelSource } from './sources/source.ts';
import { loadModel, type LoadedModel } from './weights.ts';
import { loadAdapter, targetRegex, type LoraAdapter } from './lora.ts';
import { CpuModel } from './cpu/model.ts';
import { Qwen2_5_VL, type SeqInput } from './qwen2_5_vl.ts';
import { tinyConfig, tinyConfigJson, tinySpecialIds, tinyWeights, weightFiles } from './tiny.ts';
import { Rng } from '../base/rng.ts';
import { parseConfig, QWEN2_5_VL_3B_CONFIG_JSON } from './config.ts';
import { GoldenCase } from '../parity/golden.ts';
import { loadAdapterFiles, exportAdapterFiles } from './adapterFiles.ts';
import { captureForward } from './capture.ts';

const root = resolve(__dirname, '../../../shared/golden');
let model: Qwen2_5_VL, ref: LoadedModel, adapter: LoraAdapter;
let seq: SeqInput;

beforeAll(async () => {
  await nodeGpu();
  model = await Qwen2_5_VL.load(await dirSource(`${root}/tiny-qwen2_5_vl`));
  ref = await loadModel(await dirSource(`${root}/tiny-qwen2_5_vl`));
  adapter = await loadAdapter(await dirSource(`${root}/tiny-lora`), ref.config);
  model.setAdapter(adapter);
  const c = new GoldenCase(`${root}/cases/lora_sft__one_image.safetensors`, root);
  seq = { inputIds: c.i32('input.input_ids'), images: { pixelValues: c.f32('input.pixel_values'), imageGridThw: c.i32('input.image_grid_thw') }, scoreStart: 20 };
});
afterAll(async () => {
  model?.dispose();
  await closeGpu();
});

/** log_softmax(logits[row])[id] in f64 */
function logp(logits: Float32Array, V: number, row: number, id: number): number {
  const r = logits.subarray(row * V, (row + 1) * V);
  let mx = -Infinity;
  for (const x of r) mx = Math.max(mx, x);
  let s = 0;
  for (const x of r) s += Math.exp(x - mx);
  return r[id] - mx - Math.log(s);
}

async function grads(m: Qwen2_5_VL): Promise<Float32Array[]> {
  return (await readMany(m.loraParams().map((p) => p.grad))) as Float32Array[];
}

function maxRel(a: Float32Array[], b: Float32Array[]): number {
  let err = 0, scale = 0;
  a.forEach((x, i) => x.forEach((v, j) => { err = Math.max(err, Math.abs(v - b[i][j])); scale = Math.max(scale, Math.abs(b[i][j])); }));
  return err / scale;
}

/** Central finite difference of f at the largest gradient entry of LoRA tensor `pi` vs that entry of g. */
async function expectFd(m: Qwen2_5_VL, pi: number, g: Float32Array[], f: () => Promise<number>): Promise<void> {
  const p = m.loraParams()[pi], gi = g[pi];
  let j = 0;
  gi.forEach((v, k) => { if (Math.abs(v) > Math.abs(gi[j])) j = k; });
  const [val] = (await readMany([p.param])) as Float32Array[];
  const at = async (d: number) => {
    const v = val.slice();
    v[j] += d;
    write(p.param, v);
    return f();
  };
  const h = 1e-2, fd = ((await at(h)) - (await at(-h))) / (2 * h);
  write(p.param, val);
  expect(Math.abs(fd - gi[j]), `${p.name}[${j}]: fd ${fd} vs ${gi[j]}`).toBeLessThan(2e-2 * Math.abs(gi[j]) + 1e-4);
}

describe('Qwen2_5_VL on the golden tiny model', () => {
  it('logps and hits equal the CPU reference, with and without LoRA', async () => {
    const V = ref.config.text.vocabSize, ids = seq.inputIds, L = ids.length;
    for (const lora of [true, false]) {
      const cpu = new CpuModel(ref.config, ref.weights, lora ? adapter : undefined).forward({ inputIds: ids, pixelValues: seq.images!.pixelValues, imageGridThw: seq.images!.imageGridThw });
      const r = await model.logps(seq, { lora, train: false });
      expect(r.logps.length).toBe(L - seq.scoreStart);
      for (let i = 0; i < r.logps.length; i++) {
        const t = seq.scoreStart + i;
        expect(Math.abs(r.logps[i] - logp(cpu.logits, V, t - 1, ids[t]))).toBeLessThan(2e-5);
        const row = cpu.logits.subarray((t - 1) * V, t * V);
        const am = row.indexOf(Math.max(...row));
        expect(r.hits[i]).toBe(am === ids[t] ? 1 : 0);
      }
    }
  });

  it('temperature: logps of logits / T, the same lastHidden, and gradients (with a value head) by finite differences', async () => {
    const V = ref.config.text.vocabSize, ids = seq.inputIds, H = ref.config.text.hiddenSize, T = 0.7;
    const cpu = new CpuModel(ref.config, ref.weights, adapter).forward({ inputIds: ids, pixelValues: seq.images!.pixelValues, imageGridThw: seq.images!.imageGridThw });
    const r = await model.logps(seq, { lora: true, train: false, hidden: true, temperature: T });
    const plain = await model.logps(seq, { lora: true, train: false, hidden: true });
    const scaled = cpu.logits.map((v) => v / T);
    for (let i = 0; i < r.logps.length; i++) expect(Math.abs(r.logps[i] - logp(scaled, V, seq.scoreStart + i - 1, ids[seq.scoreStart + i]))).toBeLessThan(2e-5);
    r.lastHidden!.forEach((v, i) => expect(Math.abs(v - plain.lastHidden![i])).toBeLessThan(1e-5));
    // f = Σ w·logp + Σ u·hidden (a value head reads the unscaled states)
    const S = r.logps.length, rng = new Rng(9);
    const w = Float32Array.from({ length: S }, () => rng.uniform(-1, 1)), u = Float32Array.from({ length: S * H }, () => rng.uniform(-0.1, 0.1));
    const f = async () => {
      const o = await model.logps(seq, { lora: true, train: false, hidden: true, temperature: T });
      return o.logps.reduce((a, x, i) => a + x * w[i], 0) + o.lastHidden!.reduce((a, x, i) => a + x * u[i], 0);
    };
    model.zeroGrads();
    await model.logps(seq, { lora: true, train: true, hidden: true, temperature: T });
    model.backward(w, u);
    const g = await grads(model);
    for (const pi of [0, g.length - 1]) await expectFd(model, pi, g, f);
    model.zeroGrads();
  });

  it('lastHidden rows are the final-norm states of the predicting rows', async () => {
    const H = ref.config.text.hiddenSize;
    const r = await model.logps(seq, { lora: true, train: false, hidden: true });
    const cap = await captureForward(model, seq, { lora: true });
    const want = cap.lastHiddenState.subarray((seq.scoreStart - 1) * H, (seq.inputIds.length - 1) * H);
    let err = 0;
    want.forEach((v, i) => (err = Math.max(err, Math.abs(v - r.lastHidden![i]))));
    expect(err).toBeLessThan(1e-5);
  });

  it('gradients match central finite differences of Σ w·logp', async () => {
    const S = seq.inputIds.length - seq.scoreStart;
    const rng = new Rng(7);
    const w = Float32Array.from({ length: S }, () => rng.uniform(-1, 1));
    const f = async () => (await model.logps(seq, { lora: true, train: false })).logps.reduce((a, x, i) => a + x * w[i], 0);
    model.zeroGrads();
    await model.logps(seq, { lora: true, train: true });
    model.backward(w);
    const g = await grads(model);
    // the largest gradient entry of a lora_A and a lora_B of different layers
    for (const pi of [0, 1, g.length - 2, g.length - 1]) await expectFd(model, pi, g, f);
  });

  it('recompute and lm_head row blocks give the same gradients; backward accumulates; saved forwards are a stack', async () => {
    const S = seq.inputIds.length - seq.scoreStart;
    const d = Float32Array.from({ length: S }, (_, i) => (i % 3) - 1);
    const other: SeqInput = { ...seq, inputIds: seq.inputIds.slice(0, seq.inputIds.length - 3) };
    const d2 = Float32Array.from({ length: other.inputIds.length - other.scoreStart }, (_, i) => 0.5 - (i % 2));
    const once = async (s: SeqInput, dl: Float32Array) => {
      model.zeroGrads();
      await model.logps(s, { lora: true, train: true });
      model.backward(dl);
      return grads(model);
    };
    const base = await once(seq, d);
    model.recompute = true;
    const rec = await once(seq, d);
    model.recompute = false;
    expect(maxRel(rec, base)).toBeLessThan(1e-6);
    // scored rows in several lm_head blocks: same logps and gradients
    model.scoreRowBlock = 4;
    const lpBlocks = (await model.logps(seq, { lora: true, train: false })).logps;
    const blocked = await once(seq, d);
    model.scoreRowBlock = undefined;
    const lp = (await model.logps(seq, { lora: true, train: false })).logps;
    lp.forEach((v, i) => expect(Math.abs(v - lpBlocks[i])).toBeLessThan(1e-6));
    expect(maxRel(blocked, base)).toBeLessThan(1e-6);
    // accumulate: the same step twice = 2 × grads
    model.zeroGrads();
    for (let k = 0; k < 2; k++) {
      await model.logps(seq, { lora: true, train: true });
      model.backward(d);
    }
    expect(maxRel((await grads(model)).map((x) => x.map((v) => v / 2)), base)).toBeLessThan(1e-6);
    // stack: forward A, forward B, backward B, backward A = grads(A) + grads(B)
    const gb = await once(other, d2);
    model.zeroGrads();
    await model.logps(seq, { lora: true, train: true });
    await model.logps(other, { lora: true, train: true });
    expect(model.pendingBackward).toBe(2);
    model.backward(d2);
    model.backward(d);
    expect(model.pendingBackward).toBe(0);
    expect(maxRel(await grads(model), base.map((x, i) => x.map((v, j) => v + gb[i][j])))).toBeLessThan(1e-6);
    expect(() => model.backward(d)).toThrow(/no train forward/);
    await model.logps(seq, { lora: true, train: true });
    expect(() => model.backward(d.subarray(1))).toThrow(/dlogps has/);
    expect(model.pendingBackward).toBe(0);
  });

  it('exportAdapter / loadAdapter round-trips (peft files)', async () => {
    const before = await model.logps(seq, { lora: true, train: false });
    const ex = await exportAdapterFiles(model);
    const m2 = await model.adapter();
    for (const [name, mod] of m2.modules) expect(Array.from(mod.A)).toEqual(Array.from(adapter.modules.get(name)!.A));
    await loadAdapterFiles(model, { 'adapter_config.json': ex.config, 'adapter_model.safetensors': ex.safetensors });
    const after = await model.logps(seq, { lora: true, train: false });
    expect(Array.from(after.logps)).toEqual(Array.from(before.logps));
    expect(model.loraParams()[0].name).toMatch(/^base_model\.model\.model\.language_model\.layers\.0\./);
  });

  it('greedy generation with the tied lm_head and the adapter equals the CPU reference', async () => {
    const prompt = seq.inputIds.slice(0, seq.scoreStart);
    const [got] = await model.generate([{ inputIds: prompt, images: seq.images }], { maxNewTokens: 5, stopIds: [] });
    const want = new CpuModel(ref.config, ref.weights, adapter).generate({ inputIds: prompt, pixelValues: seq.images!.pixelValues, imageGridThw: seq.images!.imageGridThw, maxNewTokens: 5, stopIds: [] });
    expect(Array.from(got)).toEqual(want);
  });

  it('refuses bad sequences clearly', async () => {
    await expect(model.logps({ ...seq, scoreStart: 0 }, { lora: true, train: false })).rejects.toThrow(/scoreStart 0/);
    await expect(model.logps({ ...seq, images: undefined }, { lora: true, train: false })).rejects.toThrow(/image tokens but no images/);
    await expect(model.logps({ inputIds: Int32Array.of(1, 99999), scoreStart: 1 }, { lora: true, train: false })).rejects.toThrow(/outside the vocabulary/);
    await expect(model.logps(seq, { lora: false, train: true })).rejects.toThrow(/needs a LoRA adapter/);
    const short = await Qwen2_5_VL.load(await dirSource(`${root}/tiny-qwen2_5_vl`), { contextLength: 16 });
    await expect(short.logps({ inputIds: new Int32Array(20).fill(5), scoreStart: 1 }, { lora: false, train: false })).rejects.toThrow(/sequence of 20 tokens is longer than the model's context of 16 tokens/);
    await expect(short.generate([{ inputIds: new Int32Array(16).fill(5) }], { maxNewTokens: 2, stopIds: [] })).rejects.toThrow(/prompt 0 has 16 tokens: no room to generate within the model's context of 16/);
    short.dispose();
  });
});

describe('loading: failures leave nothing on the GPU', () => {
  const cfgJson = tinyConfigJson({ vocabSize: 256, seed: 1 });
  const cfg = tinyConfig({ vocabSize: 256, seed: 1 });
  const files = (mutate?: (w: ReturnType<typeof tinyWeights>) => void, shard?: number) => {
    const w = tinyWeights(cfg, 1);
    mutate?.(w);
    return { 'config.json': new TextEncoder().encode(JSON.stringify(cfgJson)), ...weightFiles(w, { maxShardBytes: shard }) };
  };
  const expectClean = async (src: ModelSource, re: RegExp, opts = {}) => {
    const live = memory.live;
    await expect(Qwen2_5_VL.load(src, opts)).rejects.toThrow(re);
    expect(memory.live).toBe(live);
  };

  it('missing tensor, wrong shape, truncated file', async () => {
    await expectClean(memorySource(files((w) => delete w['model.layers.1.mlp.up_proj.weight'])), /missing from the checkpoint: "model\.layers\.1\.mlp\.up_proj\.weight"/);
    await expectClean(memorySource(files((w) => { w['model.norm.weight'].shape = [2, 64]; })), /"model\.norm\.weight" has shape \[2, 64\] but config\.json implies \[128\]/);
    const f: Record<string, Uint8Array> = files();
    const st = f['model.safetensors'];
    await expectClean(memorySource({ ...f, 'model.safetensors': st.subarray(0, st.length - 100) }), /truncated|past the end|data_offsets/);
  });

  it('a read failing mid-stream, after some tensors were uploaded', async () => {
    const f = files(undefined, 40_000);
    const shardsN = Object.keys(f).filter((k) => k.startsWith('model-')).length;
    expect(shardsN).toBeGreaterThan(2);
    const base = memorySource(f);
    let uploaded = 0, calls = 0;
    // headers first (two reads per shard), then the data: fail on the third shard's data
    const src: ModelSource = {
      ...base,
      readRange: async (file, b, e) => {
        if (++calls > 2 * shardsN + 2) throw new Error('network dropped');
        return base.readRange(file, b, e);
      },
    };
    await expectClean(src, /network dropped/, { onProgress: () => uploaded++ });
    expect(uploaded).toBeGreaterThan(0); // it did get as far as uploading
  });

  it('a memory estimate over the budget refuses before loading, with the numbers', async () => {
    let reads = 0;
    const base = memorySource(files());
    const src: ModelSource = { ...base, readRange: async (f, b, e) => { reads++; return base.readRange(f, b, e); } };
    await expectClean(src, /Cannot load .*needs about \d+\.\d+ GiB of GPU memory \(weights .*only 0\.00 GiB is available/, { budgetBytes: 1000 });
    expect(reads).toBe(0);
  });

  it('a tensor above the binding limit (other than the split vocabulary tables) refuses with the numbers', () => {
    const big = parseConfig(QWEN2_5_VL_3B_CONFIG_JSON);
    const mib = 2 ** 20;
    expect(() => Qwen2_5_VL.checkMemory(big, { maxBufferSize: 64 * mib, maxStorageBufferBindingSize: 32 * mib })).toThrow(/model\.layers\.\d+\.mlp\.\w+_proj\.weight needs 43\.0 MiB in one buffer, above this adapter's limit of 32\.0 MiB/);
    // the 622 MB embedding alone is fine: it is uploaded in shards
    expect(() => Qwen2_5_VL.checkMemory(big, { maxBufferSize: 2 ** 30, maxStorageBufferBindingSize: 128 * mib })).not.toThrow();
  });

  it('dispose returns every buffer', async () => {
    const live = memory.live;
    const m = await Qwen2_5_VL.load(memorySource(files()), { lora: { r: 2, loraAlpha: 4, loraDropout: 0.05, targetModules: targetRegex(), useRslora: false } });
    expect(m.warnings).toEqual([]); // lora_dropout is applied in train forwards
    const ids = tinySpecialIds(256);
    const s: SeqInput = { inputIds: Int32Array.of(1, 2, ids.visionStart, ids.imagePad, ids.visionEnd, 3, 4), images: { pixelValues: new Float32Array(4 * 1176).fill(0.1), imageGridThw: Int32Array.of(1, 2, 2) }, scoreStart: 5 };
    // concurrent calls for one image share one tower run (a racing second run would leak)
    const [a, b] = await Promise.all([m.logps(s, { lora: true, train: false }), m.logps({ ...s, images: { ...s.images!, pixelValues: s.images!.pixelValues.slice() } }, { lora: false, train: false })]);
    expect(a.logps.length).toBe(b.logps.length);
    await m.logps(s, { lora: true, train: true });
    m.backward(new Float32Array(2).fill(-0.5));
    await m.logps(s, { lora: true, train: true }); // left pending: dispose frees it too
    expect(memory.live).toBeGreaterThan(live);
    m.dispose();
    expect(memory.live).toBe(live);
    await expect(m.logps(s, { lora: true, train: false })).rejects.toThrow(/disposed/);
  });
});
