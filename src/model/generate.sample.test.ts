// Sampled generation drawn on the GPU (ops/sample.ts) against the CPU sampler on the same seed:
// the same tokens for temperature, top-k and top-p, and log-probs equal to the model's own
// logps at the sampling temperature.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { initLora, targetRegex } from './lora.ts';
import { Qwen2_5_VL } from './qwen2_5_vl.ts';
import { Rng } from '../base/rng.ts';
import { tinyConfig, tinySource, tinySpecialIds } from './tiny.ts';

const VOCAB = 2048, SEED = 3;
const TINY = { vocabSize: VOCAB, seed: SEED, tieWordEmbeddings: false };
const ids = tinySpecialIds(VOCAB);
const prompt = Int32Array.of(ids.imStart, 5, 6, 7, 8, 9, ids.imEnd, ids.imStart, 78);
let model: Qwen2_5_VL;

beforeAll(async () => {
  await nodeGpu();
  model = await Qwen2_5_VL.load(tinySource(TINY), { vocabChunk: 500 });
  const a = initLora(tinyConfig(TINY), { r: 4, loraAlpha: 8, loraDropout: 0, targetModules: targetRegex(), useRslora: false }, 5);
  const r = new Rng(9);
  for (const m of a.modules.values()) m.B.forEach((_, i) => (m.B[i] = r.uniform(-0.2, 0.2)));
  model.setAdapter(a);
});
afterAll(async () => {
  model?.dispose();
  await closeGpu();
});

describe('generate: GPU sampler = CPU sampler', () => {
  const modes = [{ temperature: 1 }, { temperature: 0.7, topK: 20 }, { temperature: 1.2, topK: 50, topP: 0.8 }, { temperature: 0.5, topP: 0.9 }];
  for (const m of modes) {
    it(JSON.stringify(m), async () => {
      const prompts = Array.from({ length: 4 }, () => ({ inputIds: prompt }));
      const o = { ...m, maxNewTokens: 6, stopIds: [], seed: 17 };
      const gpu = await model.generateDetailed(prompts, { ...o, sampler: 'gpu' });
      const cpu = await model.generateDetailed(prompts, { ...o, sampler: 'cpu' });
      expect(gpu.ids.map((x) => Array.from(x))).toEqual(cpu.ids.map((x) => Array.from(x)));
      expect(new Set(gpu.ids.map((x) => x.join(','))).size, 'the 4 samples differ').toBeGreaterThan(1);
      gpu.logprobs.forEach((lp, b) => lp.forEach((v, t) => expect(Math.abs(v - cpu.logprobs[b][t])).toBeLessThan(1e-4)));
      // the log-probs are the model's logps of the sampled tokens at that temperature
      const seq = Int32Array.from([...prompt, ...gpu.ids[0]]);
      const r = await model.logps({ inputIds: seq, scoreStart: prompt.length }, { lora: true, train: false, temperature: m.temperature });
      r.logps.forEach((v, t) => expect(Math.abs(v - gpu.logprobs[0][t]), `token ${t}`).toBeLessThan(2e-4));
    });
  }
  it('greedy: ids only, NaN log-probs', async () => {
    const g = await model.generateDetailed([{ inputIds: prompt }], { maxNewTokens: 3, stopIds: [] });
    expect(g.ids[0].length).toBe(3);
    expect(Array.from(g.logprobs[0]).every(Number.isNaN)).toBe(true);
  });
});
