// KV-cache generation on the GPU against the CPU reference (which reruns the whole sequence every
// step), token for token; sampling; and a model served over HTTP in hub layout, loaded through the
// hub source with a cache (the second load downloads nothing). The repetition penalty against
// transformers' RepetitionPenaltyLogitsProcessor applied to the CPU reference's logits.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { memory } from '../gpu/tensor.ts';
import { argmax, CpuModel } from './cpu/model.ts';
import { initLora, targetRegex, type LoraAdapter } from './lora.ts';
import { Qwen2_5_VL, type ImageInput } from './qwen2_5_vl.ts';
import { applyRepetitionPenalty, sampleToken } from './generate.ts';
import { Rng } from '../base/rng.ts';
import { serveModelFolders, writeTinyModelFolder } from './sources/node.ts';
import { hubSource } from './sources/hub.ts';
import { memoryCache } from './sources/cache.ts';
import { tinyConfig, tinySource, tinySpecialIds, tinyWeights } from './tiny.ts';

const VOCAB = 2048, SEED = 3;
// untied lm_head: a random tied tiny model just repeats its last token, which would hide cache bugs
const TINY = { vocabSize: VOCAB, seed: SEED, tieWordEmbeddings: false };
const cfg = tinyConfig(TINY);
const ids = tinySpecialIds(VOCAB);
const rng = new Rng(11);
// one 56×84 image: grid (1, 4, 6) → 24 patches → 6 image tokens
const image: ImageInput = { pixelValues: Float32Array.from({ length: 24 * 1176 }, () => rng.uniform(-1.5, 1.5)), imageGridThw: Int32Array.of(1, 4, 6) };
const imagePrompt = Int32Array.of(ids.imStart, 11, 12, ids.visionStart, ...new Array(6).fill(ids.imagePad), ids.visionEnd, 40, 41, 42, ids.imEnd, ids.imStart, 77);
const textPrompt = Int32Array.of(ids.imStart, 5, 6, 7, 8, 9, ids.imEnd, ids.imStart, 78);

let model: Qwen2_5_VL, adapter: LoraAdapter;
let cpuBase: CpuModel, cpuLora: CpuModel;

beforeAll(async () => {
  await nodeGpu();
  // an odd vocabulary chunk: several lm_head shards, the last one short
  model = await Qwen2_5_VL.load(tinySource(TINY), { vocabChunk: 500 });
  adapter = initLora(cfg, { r: 4, loraAlpha: 8, loraDropout: 0, targetModules: targetRegex(), useRslora: false }, 5);
  const r = new Rng(9);
  for (const m of adapter.modules.values()) m.B.forEach((_, i) => (m.B[i] = r.uniform(-0.2, 0.2)));
  model.setAdapter(adapter);
  const w = tinyWeights(cfg, SEED);
  cpuBase = new CpuModel(cfg, w);
  cpuLora = new CpuModel(cfg, w, adapter);
});
afterAll(async () => {
  model?.dispose();
  await closeGpu();
});

const cpuGen = (m: CpuModel, inputIds: Int32Array, img: ImageInput | undefined, n: number, stopIds: number[] = []) =>
  m.generate({ inputIds, pixelValues: img?.pixelValues, imageGridThw: img?.imageGridThw, maxNewTokens: n, stopIds });

describe('generate (KV cache) equals the CPU reference', () => {
  it('greedy, image prompt, with and without LoRA', async () => {
    for (const lora of [false, true]) {
      const [got] = await model.generate([{ inputIds: imagePrompt, images: image }], { maxNewTokens: 8, stopIds: [], lora });
      const want = cpuGen(lora ? cpuLora : cpuBase, imagePrompt, image, 8);
      expect(Array.from(got), `lora ${lora}`).toEqual(want);
      expect(new Set(want).size).toBeGreaterThan(4); // a real test: the tokens vary
    }
  });

  it('a batch: repeated prompt (one prefill), text-only, another image; stop ids end one sequence', async () => {
    const want = cpuGen(cpuLora, imagePrompt, image, 6);
    const wantText = cpuGen(cpuLora, textPrompt, undefined, 6);
    const shorter = imagePrompt.slice(0, imagePrompt.length - 2);
    const wantShort = cpuGen(cpuLora, shorter, image, 6);
    const out = await model.generate(
      [{ inputIds: imagePrompt, images: image }, { inputIds: textPrompt }, { inputIds: imagePrompt, images: image }, { inputIds: shorter, images: image }],
      { maxNewTokens: 6, stopIds: [] },
    );
    expect(out.map((o) => Array.from(o))).toEqual([want, wantText, want, wantShort]);
    // stop at the text prompt's third token: that sequence ends there (stop id included), others go on
    const stop = wantText[2];
    const cut = (w: number[]) => (w.includes(stop) ? w.slice(0, w.indexOf(stop) + 1) : w);
    const out2 = await model.generate([{ inputIds: textPrompt }, { inputIds: imagePrompt, images: image }], { maxNewTokens: 6, stopIds: [stop] });
    expect(out2.map((o) => Array.from(o))).toEqual([cut(wantText), cut(want)]);
  });

  it('sampling is seeded; top-k 1 and a tiny top-p are greedy', async () => {
    const p = [{ inputIds: imagePrompt, images: image }, { inputIds: textPrompt }];
    const a = await model.generate(p, { maxNewTokens: 6, stopIds: [], temperature: 1.3, seed: 42 });
    const b = await model.generate(p, { maxNewTokens: 6, stopIds: [], temperature: 1.3, seed: 42 });
    expect(a.map((x) => Array.from(x))).toEqual(b.map((x) => Array.from(x)));
    const greedy = await model.generate(p, { maxNewTokens: 6, stopIds: [] });
    const k1 = await model.generate(p, { maxNewTokens: 6, stopIds: [], temperature: 0.7, topK: 1, seed: 1 });
    const p0 = await model.generate(p, { maxNewTokens: 6, stopIds: [], temperature: 0.7, topP: 1e-6, seed: 1 });
    expect(k1).toEqual(greedy);
    expect(p0).toEqual(greedy);
    await expect(model.generate(p, { maxNewTokens: 2, stopIds: [], topP: 0 })).rejects.toThrow(/topP must be in/);
  });

  it("repetition penalty: transformers' RepetitionPenaltyLogitsProcessor before argmax / the sampler, token for token", async () => {
    // transformers: score = gather(scores, input_ids); where(score < 0, score * penalty, score / penalty); scatter back
    const row = Float32Array.of(2, -2, 0.5, -0.5, 3);
    applyRepetitionPenalty(row, new Set([0, 1, 3, 3]), 2);
    expect(Array.from(row)).toEqual([1, -4, 0.5, -1, 3]);
    // the reference: the CPU model's logits of the whole sequence each step, every id of the prompt and
    // the answer so far penalised once (written out here on its own), then argmax or the seeded sampler
    const ref = (prompt: Int32Array, n: number, penalty: number, sample?: { temperature: number; seed: number }) => {
      const seq = Array.from(prompt), out: number[] = [], r = new Rng(sample?.seed ?? 0);
      let imageEmbeds: Float32Array | undefined;
      for (let t = 0; t < n; t++) {
        const f = cpuLora.forward({ inputIds: Int32Array.from(seq), pixelValues: image.pixelValues, imageGridThw: image.imageGridThw, imageEmbeds, logitRows: [seq.length - 1] });
        imageEmbeds ??= f.imageEmbeds;
        const logits = Float32Array.from(f.logits);
        for (const id of new Set(seq)) logits[id] = logits[id] < 0 ? logits[id] * penalty : logits[id] / penalty;
        const next = sample ? sampleToken(logits, sample, r) : argmax(logits);
        out.push(next);
        seq.push(next);
      }
      return out;
    };
    const p = [{ inputIds: imagePrompt, images: image }];
    // 2 greedy: this random model never picks a seen token, so its answer stays; 0.05 favours them, and sampled any penalty moves the draws
    for (const [penalty, sample, changes] of [[2, undefined, false], [0.05, undefined, true], [1.5, { temperature: 1, seed: 5 }, true]] as const) {
      const want = ref(imagePrompt, 8, penalty, sample);
      const [got] = await model.generate(p, { maxNewTokens: 8, stopIds: [], repetitionPenalty: penalty, ...sample });
      expect(Array.from(got), `penalty ${penalty} ${JSON.stringify(sample)}`).toEqual(want);
      if (changes) expect(want, 'the penalty changes the answer').not.toEqual(ref(imagePrompt, 8, 1, sample));
    }
    await expect(model.generate(p, { maxNewTokens: 2, stopIds: [], repetitionPenalty: 0 })).rejects.toThrow(/repetitionPenalty must be > 0/);
  });

  it('generation leaves no buffers behind', async () => {
    const live = memory.live;
    await model.generate([{ inputIds: textPrompt }, { inputIds: imagePrompt, images: image }], { maxNewTokens: 4, stopIds: [] });
    expect(memory.live).toBe(live);
  });
});

describe('sampleToken', () => {
  it('temperature, top-k, top-p', () => {
    const r = new Rng(1);
    expect(sampleToken([0, 3, 1, 3], {}, r)).toBe(1); // greedy: first maximum
    const logits = [0, Math.log(3), -50, -1e9];
    let ones = 0;
    for (let i = 0; i < 4000; i++) ones += sampleToken(logits, { temperature: 1 }, r) === 1 ? 1 : 0;
    expect(ones / 4000).toBeGreaterThan(0.72);
    expect(ones / 4000).toBeLessThan(0.78);
    for (let i = 0; i < 200; i++) expect(sampleToken([1, 2, 3, 4], { temperature: 5, topK: 2 }, r)).toBeGreaterThanOrEqual(2);
    // top-p 0.7 on p = [0.5, 0.3, 0.2]: keeps the first two (mass before the third is 0.8 ≥ 0.7)
    const lp = [Math.log(0.5), Math.log(0.3), Math.log(0.2)];
    const seen = new Set<number>();
    for (let i = 0; i < 500; i++) seen.add(sampleToken(lp, { temperature: 1, topP: 0.7 }, r));
    expect([...seen].sort()).toEqual([0, 1]);
  });

  it('top-k over a large vocabulary keeps exactly the k best, drawn in proportion to their probabilities', () => {
    const r = new Rng(5), V = 20_000, k = 4;
    const logits = Float32Array.from({ length: V }, () => r.normal() * 2);
    const best = Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[b] - logits[a]).slice(0, k);
    const z = best.reduce((s, i) => s + Math.exp(logits[i]), 0);
    const counts = new Map<number, number>();
    const N = 4000;
    for (let i = 0; i < N; i++) {
      const t = sampleToken(logits, { temperature: 1, topK: k }, r);
      counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    expect([...counts.keys()].sort((a, b) => a - b)).toEqual([...best].sort((a, b) => a - b));
    for (const i of best) expect(Math.abs(counts.get(i)! / N - Math.exp(logits[i]) / z)).toBeLessThan(0.03);
  });
});

describe('a tiny model served in hub layout over HTTP', () => {
  it('loads sharded through the hub source, generates like the CPU, and a second load hits the cache', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'patchwork-hub-'));
    const server = await serveModelFolders(dir);
    try {
      await writeTinyModelFolder(join(dir, 'acme', 'tiny-vl'), { ...TINY, maxShardBytes: 150_000 });
      expect(readdirSync(join(dir, 'acme', 'tiny-vl'))).toContain('model.safetensors.index.json');
      const cache = memoryCache();
      const progress: number[] = [];
      const m1 = await Qwen2_5_VL.load(hubSource('acme/tiny-vl', { endpoint: server.endpoint, cache }), { onProgress: (p) => progress.push(p.bytes) });
      expect(server.log.some((l) => /model-00002-of-/.test(l.path) && l.range)).toBe(true);
      expect(progress[progress.length - 1]).toBeGreaterThan(0);
      const [got] = await m1.generate([{ inputIds: imagePrompt, images: image }], { maxNewTokens: 6, stopIds: [] });
      expect(Array.from(got)).toEqual(cpuGen(cpuBase, imagePrompt, image, 6));
      m1.dispose();
      const requests = server.log.length;
      const src2 = hubSource('acme/tiny-vl', { endpoint: server.endpoint, cache });
      const m2 = await Qwen2_5_VL.load(src2);
      expect(server.log.length).toBe(requests);
      expect(src2.stats.networkBytes).toBe(0);
      const [again] = await m2.generate([{ inputIds: imagePrompt, images: image }], { maxNewTokens: 6, stopIds: [] });
      expect(again).toEqual(got);
      m2.dispose();
    } finally {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
