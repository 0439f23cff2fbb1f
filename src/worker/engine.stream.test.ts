// Engine.generate streamed (the Playground's path) on Dawn with the built-in tiny model (the real
// Qwen vocabulary, so a random model's tokens include partial characters): the events' text grows
// as prefixes of the final answer and ends at it, the result is the one generate gives without a
// callback (greedy and seeded sampling); cancelGenerate() stops the answer after the current token,
// the result says so, and the engine answers the next question as before.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { memory } from '../gpu/tensor.ts';
import { MemoryKV } from '../train/checkpoint.ts';
import { loadDefaultTokenizer } from '../data/tokenizer.ts';
import { syntheticGrounding } from '../data/synthetic.ts';
import type { RawImage } from '../data/image.ts';
import { Engine } from './engine.ts';
import type { GenerateOptions, GenerateStream } from './api.ts';

const img = syntheticGrounding({ count: 1, seed: 4 })[0].image;
const pixels = new Map<Blob, RawImage>();
const blob = new Blob([new Uint8Array([1])], { type: 'image/png' });
pixels.set(blob, img);

let engine: Engine;
beforeAll(async () => {
  await nodeGpu();
  engine = new Engine({
    kv: async () => new MemoryKV(),
    decodeImage: async (b) => pixels.get(b)!,
    loadSamples: async () => { throw new Error('no datasets here'); },
    lock: async () => () => {},
    defaultTokenizer: loadDefaultTokenizer,
  });
  await engine.loadModel({ source: 'tiny' }, { r: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'v_proj'], useRslora: false });
});
afterAll(async () => {
  await closeGpu();
});

const base: GenerateOptions = { maxNewTokens: 10, minPixels: 56 * 56, maxPixels: 112 * 112, original: [{ width: img.width * 3, height: img.height * 3 }] };

describe('engine: streamed generate', () => {
  it('text grows to the final answer; the result equals the unstreamed one (greedy, sampled)', async () => {
    for (const o of [base, { ...base, temperature: 1.5, topK: 200, topP: 0.95, seed: 9 }]) {
      const plain = await engine.generate([blob], 'Where is the shape?', o);
      const events: GenerateStream[] = [];
      const r = await engine.generate([blob], 'Where is the shape?', o, (e) => void events.push(e));
      expect(r).toMatchObject({ text: plain.text, tokens: plain.tokens, boxes: plain.boxes, resized: plain.resized });
      expect(r.stopped).toBeUndefined();
      expect(events.map((e) => e.tokens)).toEqual(Array.from({ length: plain.tokens }, (_, i) => i + 1));
      events.forEach((e, i) => {
        // a partial character at the end waits for its other tokens (a random model also writes
        // bytes no token completes: those stay U+FFFD inside the text, as in the final decode)
        expect(e.text).not.toMatch(/\uFFFD$/);
        if (i) expect(e.text.startsWith(events[i - 1].text)).toBe(true);
        expect(e.resized).toEqual(r.resized);
      });
      // the last event is the answer (a partial character left at the very end shows only in the result)
      expect(r.text.replace(/\uFFFD+$/, '')).toBe(events.at(-1)!.text);
      if (o.temperature) expect(plain.text).not.toBe((await engine.generate([blob], 'Where is the shape?', base)).text);
    }
  });

  it('cancelGenerate stops after the current token; the engine stays usable', async () => {
    const o = { ...base, temperature: 1, seed: 3 };
    const full = await engine.generate([blob], 'Describe the image.', o);
    expect(full.tokens).toBe(10); // a random model does not stop on its own within 10 (else this test would prove nothing)
    const live = memory.live;
    const seen: number[] = [];
    const cut = await engine.generate([blob], 'Describe the image.', o, (e) => {
      seen.push(e.tokens);
      if (e.tokens === 3) void engine.cancelGenerate();
    });
    expect(cut.stopped).toBe(true);
    expect(cut.tokens).toBe(3);
    expect(seen).toEqual([1, 2, 3]);
    expect(full.text.startsWith(cut.text.replace(/\uFFFD+$/, ''))).toBe(true);
    expect(memory.live).toBe(live);
    // the cancel was for that answer only: the next one runs in full, the same as before
    const again = await engine.generate([blob], 'Describe the image.', o, () => {});
    expect(again).toMatchObject({ text: full.text, tokens: 10 });
    expect(again.stopped).toBeUndefined();
  });
});
