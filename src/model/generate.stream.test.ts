// generate()'s per-token callback (streaming): it sees exactly the tokens generate returns, in
// order, greedy and sampled, for a batch with a stop id; returning true ends generation there with
// the tokens so far (a prefix of the full answer), leaving nothing on the GPU; the outputs with a
// callback equal those without.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { memory } from '../gpu/tensor.ts';
import { initLora, targetRegex } from './lora.ts';
import { Qwen2_5_VL } from './qwen2_5_vl.ts';
import { Rng } from '../base/rng.ts';
import { tinyConfig, tinySource, tinySpecialIds } from './tiny.ts';
import type { GenerateOptions } from './generate.ts';

const VOCAB = 2048, SEED = 3;
// untied lm_head: a random tied tiny model just repeats its last token
const TINY = { vocabSize: VOCAB, seed: SEED, tieWordEmbeddings: false };
const ids = tinySpecialIds(VOCAB);
const p1 = Int32Array.of(ids.imStart, 5, 6, 7, 8, 9, ids.imEnd, ids.imStart, 78);
const p2 = Int32Array.of(ids.imStart, 15, 16, 17, ids.imEnd, ids.imStart, 79);
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

/** generateDetailed with a callback that records every token, per prompt. */
async function streamed(prompts: Int32Array[], o: GenerateOptions) {
  const seen: number[][] = prompts.map(() => []), lps: number[][] = prompts.map(() => []);
  let calls = 0;
  const g = await model.generateDetailed(prompts.map((inputIds) => ({ inputIds })), {
    ...o,
    onToken: async (toks) => {
      calls++;
      for (const t of toks) {
        seen[t.prompt].push(t.id);
        lps[t.prompt].push(t.logprob);
      }
    },
  });
  return { g, seen, lps, calls };
}

describe('generate: onToken', () => {
  it('sees exactly the returned tokens, one call per step; outputs unchanged (greedy and sampled, stop id)', async () => {
    const plain = await model.generate([{ inputIds: p1 }, { inputIds: p2 }], { maxNewTokens: 8, stopIds: [] });
    // a stop id that ends the first sequence early: the other goes on alone
    const stop = plain[0][2];
    for (const o of [
      { maxNewTokens: 8, stopIds: [stop] },
      { maxNewTokens: 8, stopIds: [stop], temperature: 1.1, topK: 40, topP: 0.9, seed: 7 },
      { maxNewTokens: 8, stopIds: [], temperature: 0.8, seed: 3, sampler: 'cpu' as const },
    ]) {
      const want = await model.generateDetailed([{ inputIds: p1 }, { inputIds: p2 }], o);
      const { g, seen, lps, calls } = await streamed([p1, p2], o);
      const got = g.ids.map((x) => Array.from(x));
      expect(got, JSON.stringify(o)).toEqual(want.ids.map((x) => Array.from(x)));
      expect(seen).toEqual(got);
      lps.forEach((l, b) => expect(l.map((v) => (Number.isNaN(v) ? 'nan' : v))).toEqual(Array.from(g.logprobs[b], (v) => (Number.isNaN(v) ? 'nan' : v))));
      expect(calls).toBe(Math.max(...got.map((x) => x.length)));
      if (!('temperature' in o)) expect(got[0].length, 'the stop id ended the first sequence').toBe(Array.from(plain[0]).indexOf(stop) + 1);
    }
  });

  it('returning true stops: the tokens so far, a prefix of the full answer; nothing left on the GPU; the model keeps working', async () => {
    const o = { maxNewTokens: 10, stopIds: [], temperature: 0.9, seed: 5 };
    const full = await model.generate([{ inputIds: p1 }, { inputIds: p2 }], o);
    const live = memory.live;
    let n = 0;
    const cut = await model.generate([{ inputIds: p1 }, { inputIds: p2 }], { ...o, onToken: () => ++n >= 3 });
    expect(n).toBe(3);
    expect(memory.live).toBe(live);
    cut.forEach((c, b) => {
      expect(c.length).toBe(3);
      expect(Array.from(c)).toEqual(Array.from(full[b].slice(0, 3)));
    });
    const again = await model.generate([{ inputIds: p1 }, { inputIds: p2 }], o);
    expect(again.map((x) => Array.from(x))).toEqual(full.map((x) => Array.from(x)));
  });
});
