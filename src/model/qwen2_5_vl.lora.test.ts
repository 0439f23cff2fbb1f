// LoRA dropout and vision LoRA on the golden tiny model: train forwards against the CPU reference
// with the same hash masks, finite-difference checks of the backward (text and vision modules,
// with a fixed dropout seed), the image cache bypass, text-only sequences, and the peft round trip
// with vision keys in both layouts.
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { memory, readMany, write } from '../gpu/tensor.ts';
import { dirSource } from './sources/node.ts';
import { loadModel, type LoadedModel } from './weights.ts';
import { initLora, loadAdapter, parseAdapter, targetRegex, TEXT_LORA_MODULES, VISION_LORA_MODULES, type LoraAdapter, type LoraConfig } from './lora.ts';
import { readSafetensors } from './safetensors.ts';
import { CpuModel } from './cpu/model.ts';
import { Qwen2_5_VL, type SeqInput } from './qwen2_5_vl.ts';
import { Rng } from '../base/rng.ts';
import { GoldenCase } from '../parity/golden.ts';
import { loadAdapterFiles, exportAdapterFiles } from './adapterFiles.ts';

const root = resolve(__dirname, '../../../shared/golden');
let model: Qwen2_5_VL, ref: LoadedModel, textAdapter: LoraAdapter;
let seq: SeqInput;

beforeAll(async () => {
  await nodeGpu();
  model = await Qwen2_5_VL.load(await dirSource(`${root}/tiny-qwen2_5_vl`));
  ref = await loadModel(await dirSource(`${root}/tiny-qwen2_5_vl`));
  textAdapter = await loadAdapter(await dirSource(`${root}/tiny-lora`), ref.config);
  const c = new GoldenCase(`${root}/cases/lora_sft__one_image.safetensors`, root);
  seq = { inputIds: c.i32('input.input_ids'), images: { pixelValues: c.f32('input.pixel_values'), imageGridThw: c.i32('input.image_grid_thw') }, scoreStart: 20 };
});
afterAll(async () => {
  model?.dispose();
  await closeGpu();
});

const withDropout = (a: LoraAdapter, p: number): LoraAdapter => ({ ...a, config: { ...a.config, loraDropout: p } });

/** A peft-initialised adapter with B filled too (B = 0 would make the branch invisible in a forward). */
function randomAdapter(cfg: LoraConfig, seed: number): LoraAdapter {
  const a = initLora(ref.config, cfg, seed);
  const rng = new Rng(seed + 1);
  for (const m of a.modules.values()) for (let i = 0; i < m.B.length; i++) m.B[i] = rng.uniform(-0.3, 0.3);
  return a;
}

const visionCfg = (over: Partial<LoraConfig> = {}): LoraConfig => ({ r: 3, loraAlpha: 6, loraDropout: 0, targetModules: targetRegex(TEXT_LORA_MODULES, VISION_LORA_MODULES), useRslora: false, ...over });

/** log_softmax(logits[row])[id] in f64 */
function logp(logits: Float32Array, V: number, row: number, id: number): number {
  const r = logits.subarray(row * V, (row + 1) * V);
  let mx = -Infinity;
  for (const x of r) mx = Math.max(mx, x);
  let s = 0;
  for (const x of r) s += Math.exp(x - mx);
  return r[id] - mx - Math.log(s);
}

function cpuLogps(a: LoraAdapter | undefined, s: SeqInput, dropout?: { p: number; seed: number }): number[] {
  const V = ref.config.text.vocabSize, ids = s.inputIds;
  const out = new CpuModel(ref.config, ref.weights, a).forward({ inputIds: ids, pixelValues: s.images?.pixelValues, imageGridThw: s.images?.imageGridThw, dropout });
  return Array.from({ length: ids.length - s.scoreStart }, (_, i) => logp(out.logits, V, s.scoreStart + i - 1, ids[s.scoreStart + i]));
}

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

async function grads(m: Qwen2_5_VL): Promise<Map<string, Float32Array>> {
  const ps = m.loraParams();
  const g = await readMany(ps.map((p) => p.grad));
  return new Map(ps.map((p, i) => [p.name, g[i] as Float32Array]));
}

/** One train step's gradients (fresh zeroed grads) for upstream weights w. */
async function step(m: Qwen2_5_VL, s: SeqInput, w: Float32Array, opts: { dropoutSeed?: number } = {}): Promise<Map<string, Float32Array>> {
  m.zeroGrads();
  await m.logps(s, { lora: true, train: true, ...opts });
  m.backward(w);
  return grads(m);
}

/**
 * Central differences of f = Σ w·logp (train forwards with a fixed dropout seed, released unused)
 * at the largest gradient entry of each named parameter.
 */
async function fdCheck(m: Qwen2_5_VL, s: SeqInput, w: Float32Array, names: string[], dropoutSeed?: number): Promise<void> {
  const g = await step(m, s, w, { dropoutSeed });
  const f = async () => {
    const r = await m.logps(s, { lora: true, train: true, dropoutSeed });
    m.releaseSaved();
    return r.logps.reduce((a, x, i) => a + x * w[i], 0);
  };
  const params = new Map(m.loraParams().map((p) => [p.name, p]));
  for (const name of names) {
    const p = params.get(name);
    expect(p, name).toBeDefined();
    const gi = g.get(name)!;
    let j = 0;
    gi.forEach((v, k) => { if (Math.abs(v) > Math.abs(gi[j])) j = k; });
    expect(Math.abs(gi[j]), `${name}: gradient is zero`).toBeGreaterThan(1e-5);
    const [val] = (await readMany([p!.param])) as Float32Array[];
    const h = 1e-2;
    const at = async (d: number) => {
      const v = val.slice();
      v[j] += d;
      write(p!.param, v);
      return f();
    };
    const fd = ((await at(h)) - (await at(-h))) / (2 * h);
    write(p!.param, val);
    expect(Math.abs(fd - gi[j]), `${name}[${j}]: fd ${fd} vs ${gi[j]}`).toBeLessThan(2e-2 * Math.abs(gi[j]) + 1e-4);
  }
}

const weights = (n: number, seed = 7) => {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => rng.uniform(-1, 1));
};

describe('LoRA dropout', () => {
  it('p = 0 (or dropout: false) is exactly the plain path; eval forwards never drop', async () => {
    const S = seq.inputIds.length - seq.scoreStart, w = weights(S);
    model.setAdapter(textAdapter); // lora_dropout 0
    const evalLp = (await model.logps(seq, { lora: true, train: false })).logps;
    const g0 = await step(model, seq, w);
    const trainLp = (await model.logps(seq, { lora: true, train: true })).logps;
    model.releaseSaved();
    expect(Array.from(trainLp)).toEqual(Array.from(evalLp));
    model.setAdapter(withDropout(textAdapter, 0.3));
    expect(model.warnings.join()).not.toMatch(/dropout/);
    expect(Array.from((await model.logps(seq, { lora: true, train: false })).logps)).toEqual(Array.from(evalLp));
    model.zeroGrads();
    const off = await model.logps(seq, { lora: true, train: true, dropout: false });
    model.backward(w);
    expect(Array.from(off.logps)).toEqual(Array.from(evalLp));
    const g1 = await grads(model);
    for (const [k, v] of g0) expect(Array.from(g1.get(k)!), k).toEqual(Array.from(v));
  });

  it('a train forward equals the CPU reference with the same masks; seeds repeat, differ, and default to a counter', async () => {
    const p = 0.3;
    model.setAdapter(withDropout(textAdapter, p));
    const a = await model.logps(seq, { lora: true, train: true, dropoutSeed: 5 });
    const b = await model.logps(seq, { lora: true, train: true, dropoutSeed: 5 });
    const c = await model.logps(seq, { lora: true, train: true, dropoutSeed: 6 });
    const d1 = await model.logps(seq, { lora: true, train: true });
    const d2 = await model.logps(seq, { lora: true, train: true });
    model.releaseSaved();
    const cpu = cpuLogps(textAdapter, seq, { p, seed: 5 });
    expect(maxAbs(a.logps, cpu)).toBeLessThan(2e-5);
    expect(maxAbs(a.logps, cpuLogps(textAdapter, seq))).toBeGreaterThan(1e-3); // the masks do change the result
    expect(Array.from(b.logps)).toEqual(Array.from(a.logps));
    expect(maxAbs(c.logps, a.logps)).toBeGreaterThan(1e-4);
    expect(maxAbs(d1.logps, d2.logps)).toBeGreaterThan(1e-4);
  });

  it('gradients match central finite differences with a fixed seed (incl. recompute)', async () => {
    const S = seq.inputIds.length - seq.scoreStart, w = weights(S, 3);
    model.setAdapter(withDropout(textAdapter, 0.2));
    const names = model.loraParams().map((p) => p.name);
    await fdCheck(model, seq, w, [names[0], names[1], names[names.length - 2], names[names.length - 1]], 1234);
    // recompute redraws the same masks in the backward's rebuilt layers
    const base = await step(model, seq, w, { dropoutSeed: 77 });
    model.recompute = true;
    const rec = await step(model, seq, w, { dropoutSeed: 77 });
    model.recompute = false;
    for (const [k, v] of base) expect(maxAbs(rec.get(k)!, v), k).toBeLessThan(1e-6 * Math.max(1, ...Array.from(v, Math.abs)));
  });
});

describe('vision LoRA', () => {
  let va: LoraAdapter;
  beforeAll(() => {
    va = randomAdapter(visionCfg(), 21);
  });

  it('forward (train and eval, with and without lora) equals the CPU reference with the same adapter', async () => {
    model.setAdapter(va);
    expect([...va.modules.keys()].filter((n) => n.startsWith('visual.')).length).toBe(4 * 5 + 2);
    for (const lora of [true, false]) {
      const r = await model.logps(seq, { lora, train: false });
      expect(maxAbs(r.logps, cpuLogps(lora ? va : undefined, seq)), `lora ${lora}`).toBeLessThan(3e-5);
    }
    // the vision branch matters: without it the result moves
    const textOnly: LoraAdapter = { ...va, modules: new Map([...va.modules].filter(([n]) => !n.startsWith('visual.'))) };
    expect(maxAbs((await model.logps(seq, { lora: true, train: false })).logps, cpuLogps(textOnly, seq))).toBeGreaterThan(1e-3);
    // a train forward with dropout, vision masks included
    model.setAdapter(withDropout(va, 0.25));
    const t = await model.logps(seq, { lora: true, train: true, dropoutSeed: 9 });
    model.releaseSaved();
    expect(maxAbs(t.logps, cpuLogps(va, seq, { p: 0.25, seed: 9 }))).toBeLessThan(3e-5);
    // the tower output follows the adapter (no stale cache)
    const before = (await model.logps(seq, { lora: true, train: false })).logps;
    const qkvA = model.loraParams().find((p) => p.name.includes('visual.blocks.0.attn.qkv.lora_A'))!;
    const [A] = (await readMany([qkvA.param])) as Float32Array[];
    write(qkvA.param, A.map((x) => 3 * x));
    const after = (await model.logps(seq, { lora: true, train: false })).logps;
    write(qkvA.param, A);
    expect(maxAbs(after, before)).toBeGreaterThan(1e-5);
  });

  it('vision gradients match central finite differences (qkv, proj, MLP, merger; with dropout)', async () => {
    const S = seq.inputIds.length - seq.scoreStart, w = weights(S, 5);
    model.setAdapter(withDropout(va, 0.1));
    const k = (m: string, ab: 'A' | 'B') => `base_model.model.model.${m}.lora_${ab}.weight`;
    await fdCheck(model, seq, w, [
      k('visual.blocks.0.attn.qkv', 'A'), k('visual.blocks.0.attn.qkv', 'B'), k('visual.blocks.1.attn.proj', 'A'),
      k('visual.blocks.2.mlp.gate_proj', 'B'), k('visual.blocks.3.mlp.down_proj', 'A'), k('visual.merger.mlp.0', 'A'), k('visual.merger.mlp.2', 'B'),
    ], 31);
  });

  it('recompute gives the same gradients; an adapter on a few vision modules only stops the backward early', async () => {
    const S = seq.inputIds.length - seq.scoreStart, w = weights(S, 6);
    model.setAdapter(withDropout(va, 0.1));
    const base = await step(model, seq, w, { dropoutSeed: 4 });
    model.recompute = true;
    const rec = await step(model, seq, w, { dropoutSeed: 4 });
    model.recompute = false;
    for (const [key, v] of base) expect(maxAbs(rec.get(key)!, v), key).toBeLessThan(1e-6 * Math.max(1, ...Array.from(v, Math.abs)));
    // vision only: block 2's up_proj and the merger's mlp.2 (the backward stops at block 2)
    const few = randomAdapter(visionCfg({ targetModules: '(.*\\.)?visual\\.(blocks\\.2\\.mlp\\.up_proj|merger\\.mlp\\.2)' }), 8);
    expect([...few.modules.keys()]).toEqual(['visual.blocks.2.mlp.up_proj', 'visual.merger.mlp.2']);
    model.setAdapter(few);
    expect(maxAbs((await model.logps(seq, { lora: true, train: false })).logps, cpuLogps(few, seq))).toBeLessThan(3e-5);
    await fdCheck(model, seq, w, model.loraParams().map((p) => p.name));
  });

  it('a text-only sequence with vision targets trains the text modules and leaves vision grads at zero', async () => {
    model.setAdapter(va);
    const ids = seq.inputIds.filter((id) => id !== ref.config.imageTokenId).slice(-14);
    const s: SeqInput = { inputIds: ids, scoreStart: 2 };
    const S = ids.length - 2, w = weights(S, 9);
    const r = await model.logps(s, { lora: true, train: false });
    expect(maxAbs(r.logps, cpuLogps(va, s))).toBeLessThan(3e-5);
    const g = await step(model, s, w);
    for (const [name, v] of g) {
      const nz = v.some((x) => x !== 0);
      if (name.includes('.visual.')) expect(nz, name).toBe(false);
      else if (name.endsWith('lora_B.weight') || name.includes('layers.1.')) expect(nz, name).toBe(true);
    }
  });

  it('generation with vision LoRA equals the CPU reference', async () => {
    model.setAdapter(va);
    const prompt = seq.inputIds.slice(0, seq.scoreStart);
    const [got] = await model.generate([{ inputIds: prompt, images: seq.images }], { maxNewTokens: 4, stopIds: [] });
    const want = new CpuModel(ref.config, ref.weights, va).generate({ inputIds: prompt, pixelValues: seq.images!.pixelValues, imageGridThw: seq.images!.imageGridThw, maxNewTokens: 4, stopIds: [] });
    expect(Array.from(got)).toEqual(want);
  });

  it('exportAdapter / loadAdapter round-trips vision keys in both layouts', async () => {
    model.setAdapter(va);
    const before = (await model.logps(seq, { lora: true, train: false })).logps;
    for (const layout of ['transformers', 'hub'] as const) {
      const ex = await exportAdapterFiles(model, { layout });
      const keys = [...readSafetensors(ex.safetensors, 'adapter').tensors.keys()];
      const want = layout === 'transformers' ? 'base_model.model.model.visual.blocks.0.attn.qkv.lora_A.weight' : 'base_model.model.visual.blocks.0.attn.qkv.lora_A.weight';
      expect(keys).toContain(want);
      expect(keys).toContain(layout === 'transformers' ? 'base_model.model.model.visual.merger.mlp.2.lora_B.weight' : 'base_model.model.visual.merger.mlp.2.lora_B.weight');
      expect(keys).toContain(layout === 'transformers' ? 'base_model.model.model.language_model.layers.1.mlp.down_proj.lora_B.weight' : 'base_model.model.model.layers.1.mlp.down_proj.lora_B.weight');
      const parsed = parseAdapter(ex.config, ex.safetensors, ref.config);
      expect(parsed.layout).toBe(layout);
      expect(parsed.modules.get('visual.blocks.0.attn.qkv')!.B.length).toBe(3 * ref.config.vision.hiddenSize * 3);
      model.setAdapter(randomAdapter(visionCfg(), 99)); // something else in between
      await loadAdapterFiles(model, { 'adapter_config.json': ex.config, 'adapter_model.safetensors': ex.safetensors });
      expect(Array.from((await model.logps(seq, { lora: true, train: false })).logps)).toEqual(Array.from(before));
    }
    expect(model.loraParams().some((p) => p.name === 'base_model.model.model.visual.blocks.3.attn.qkv.lora_B.weight')).toBe(true);
  });

  it('initAdapter / load with vision targets; dispose returns every buffer (pending vision forwards too)', async () => {
    const live = memory.live;
    const m = await Qwen2_5_VL.load(await dirSource(`${root}/tiny-qwen2_5_vl`), { lora: visionCfg({ loraDropout: 0.05 }) });
    expect(m.warnings).toEqual([]);
    await m.logps(seq, { lora: true, train: true });
    m.backward(new Float32Array(seq.inputIds.length - seq.scoreStart).fill(-0.5));
    m.recompute = true;
    await m.logps(seq, { lora: true, train: true });
    m.recompute = false;
    await m.logps(seq, { lora: true, train: true });
    expect(m.pendingBackward).toBe(2);
    m.dispose();
    expect(memory.live).toBe(live);
  });
});
