// Engine.generate streamed (the Playground's path) on Dawn with the built-in tiny model (the real
// Qwen vocabulary, so a random model's tokens include partial characters): the events' text grows
// as prefixes of the final answer and ends at it, the result is the one generate gives without a
// callback (greedy and seeded sampling); cancelGenerate() stops the answer after the current token,
// the result says so, and the engine answers the next question as before. The model's
// generation_config.json: read and checked (bad fields are warnings), its eos_token_id stops an
// answer. While an answer is generated, training, resuming and predictions over a split are refused
// (and an answer while a run trains).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { memory } from '../gpu/tensor.ts';
import { MemoryKV } from '../train/checkpoint.ts';
import { loadDefaultTokenizer } from '../data/tokenizer.ts';
import { syntheticGrounding } from '../data/synthetic.ts';
import type { RawImage } from '../data/image.ts';
import { readFileSync } from 'node:fs';
import { DEFAULT_CONFIG, type TrainConfig } from '../config/config.ts';
import { memorySource } from '../model/sources/source.ts';
import { qwenTokenizerJsonPath } from '../model/sources/node.ts';
import { QWEN_IDS, tinyFiles } from '../model/tiny.ts';
import type { Qwen2_5_VL } from '../model/qwen2_5_vl.ts';
import { Engine, type EngineDeps } from './engine.ts';
import type { GenerateOptions, GenerateStream, TrainEvent } from './api.ts';

const img = syntheticGrounding({ count: 1, seed: 4 })[0].image;
const pixels = new Map<Blob, RawImage>();
const blob = new Blob([new Uint8Array([1])], { type: 'image/png' });
pixels.set(blob, img);

const kv = new MemoryKV();
const deps: EngineDeps = {
  kv: async () => kv,
  decodeImage: async (b) => pixels.get(b)!,
  loadSamples: async () => { throw new Error('no datasets here'); },
  lock: async () => () => {},
  defaultTokenizer: loadDefaultTokenizer,
};
const loadedOf = (e: Engine) => (e as unknown as { loaded: { model: Qwen2_5_VL } }).loaded;
const enc = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));

let engine: Engine;
beforeAll(async () => {
  await nodeGpu();
  engine = new Engine(deps);
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

  it("reads the model's generation_config.json; its eos_token_id stops an answer; bad fields are warnings, never errors", async () => {
    expect(await engine.generationConfig({ source: 'tiny' })).toEqual({ found: true, doSample: false, eosTokenIds: [QWEN_IDS.imEnd, QWEN_IDS.endoftext], warnings: [], notApplied: [] });
    // the ids of an answer that runs its full 10 tokens (no stop id among them)
    const o = { ...base, temperature: 1, seed: 3, adapter: false };
    const model = loadedOf(engine).model, gen = model.generate;
    let ids: number[] = [];
    model.generate = async (...a) => {
      const out = await gen.apply(model, a);
      ids = Array.from(out[0]);
      return out;
    };
    const full = await engine.generate([blob], 'Describe the image.', o);
    model.generate = gen;
    expect(full.tokens).toBe(10);
    // a repetition penalty reaches generate() (0.05 favours the prompt's and the answer's tokens: another answer)
    expect((await engine.generate([blob], 'Describe the image.', { ...o, repetitionPenalty: 0.05 })).text).not.toBe(full.text);
    const k = ids.findIndex((id, i) => i >= 2 && !ids.slice(0, i).includes(id)); // a token first seen at position k
    expect(k).toBeGreaterThan(0);
    // the same model as a folder whose generation_config.json names that token as eos (and has bad fields)
    const files = {
      ...tinyFiles(), 'tokenizer.json': readFileSync(qwenTokenizerJsonPath()!),
      'generation_config.json': enc({ eos_token_id: ids[k], do_sample: 'no', top_p: 2, num_beams: 4 }),
    };
    const other = new Engine({ ...deps, folder: async () => memorySource(files, 'test folder') });
    const spec = { source: 'folder', path: 'test' } as const;
    expect(await other.generationConfig(spec)).toEqual({
      found: true, eosTokenIds: [ids[k]], notApplied: ['num_beams 4 from generation_config.json is not applied.'],
      warnings: [
        'generation_config.json: do_sample "no" is not true or false: ignored, the transformers default is used.',
        'generation_config.json: top_p 2 is out of range (must be in (0, 1]): ignored, the transformers default is used.',
      ],
    });
    await other.loadModel(spec, null);
    try {
      const cut = await other.generate([blob], 'Describe the image.', o);
      expect(cut.tokens).toBe(k + 1); // the eos token is the last one generated...
      expect(full.text.startsWith(cut.text.replace(/\uFFFD+$/, ''))).toBe(true); // ...and not part of the text
      expect(cut.text.length).toBeLessThan(full.text.length);
    } finally {
      (other as unknown as { dropModel(): void }).dropModel();
    }
  });

  it('refuses to train, resume or predict over a split while an answer is generated, and to answer while a run trains', async () => {
    const o = { ...base, temperature: 1, seed: 3 };
    const busy = (what: string) => new RegExp(`An answer is being generated in this tab \\(Playground\\): stop it first \\(Stop on the Playground screen\\) or wait for it to end, then ${what}\\.`);
    const c: TrainConfig = structuredClone(DEFAULT_CONFIG);
    c.lora = { ...c.lora, r: 4, alpha: 8, dropout: 0 };
    c.optim = { ...c.optim, learningRate: 1e-3, lrScheduler: 'constant', warmupSteps: 0, maxSteps: 2, saveSteps: 0 };
    c.eval = { ...c.eval, evalSplit: 0 };
    const data = { examples: [{ images: [blob], record: { kind: 'sft' as const, question: 'What is it?', answer: 'A shape.' } }], minPixels: base.minPixels, maxPixels: base.maxPixels };
    // a new run and predictions over a split: refused before they take a lock or read anything
    let answer = engine.generate([blob], 'Describe the image.', o, () => {});
    await expect(engine.train({ runId: 'g1', config: c, data }, () => {})).rejects.toThrow(busy('train'));
    await expect(engine.predictSplit({ datasetId: 'd', config: c, split: 'all', adapter: false, base: true }, () => {})).rejects.toThrow(busy('run predictions over a split'));
    expect((await answer).tokens).toBe(10);
    expect(await kv.get('run/g1/meta')).toBeUndefined();
    // while the run trains an answer is refused; while it is paused an answer may run, and Resume waits for it
    const events: TrainEvent[] = [];
    let duringRun: Promise<unknown> | undefined;
    let onPaused!: () => void;
    const paused = new Promise<void>((r) => (onPaused = r));
    const run = engine.train({ runId: 'g2', config: c, data }, (e) => {
      events.push(e);
      if (e.type === 'step' && e.step === 1) {
        duringRun = engine.generate([blob], 'Describe the image.', o, () => {}).catch((x: Error) => x.message);
        void engine.pause();
      }
      if (e.type === 'status' && e.status === 'paused') onPaused();
    });
    await paused;
    expect(await duringRun).toBe('Cannot generate an answer while a run is training: pause or stop it first.');
    answer = engine.generate([blob], 'Describe the image.', o, () => {});
    await expect(engine.resume()).rejects.toThrow(busy('resume'));
    expect((await answer).tokens).toBe(10);
    await engine.resume();
    expect(await run).toMatchObject({ status: 'done', step: 2 });
    expect(events.filter((e) => e.type === 'step').map((e) => (e as { step: number }).step)).toEqual([1, 2]);
    // nor is the adapter swapped under an answer; once it ends, it may be
    answer = engine.generate([blob], 'Describe the image.', o, () => {});
    await expect(engine.useAdapter({ kind: 'run', runId: 'g2' })).rejects.toThrow(busy('switch adapters'));
    expect((await answer).tokens).toBe(10);
    expect(await engine.useAdapter({ kind: 'run', runId: 'g2' })).toMatchObject({ runId: 'g2', step: 2 });
  }, 300_000);
});
