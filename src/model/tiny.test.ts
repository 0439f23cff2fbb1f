import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { QWEN_IDS, tinyConfig, tinyFiles, tinySpecialIds, tinyWeights } from './tiny.ts';
import { bf16ToF32 } from '../gpu/bf16.ts';
import { cacheApiStore, loadModel } from './weights.ts';
import { dirSource, qwenTokenizerJsonPath, writeTinyModelFolder } from './sources/node.ts';
import { CpuModel } from './cpu/model.ts';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('tiny model', () => {
  it('is deterministic for a seed and different across seeds', () => {
    const a = tinyFiles({ seed: 3, vocabSize: 2000 }), b = tinyFiles({ seed: 3, vocabSize: 2000 }), c = tinyFiles({ seed: 4, vocabSize: 2000 });
    expect(sha(a['model.safetensors'])).toBe(sha(b['model.safetensors']));
    expect(sha(a['model.safetensors'])).not.toBe(sha(c['model.safetensors']));
    // adding nothing else: a tensor's values depend only on (seed, name)
    const w1 = tinyWeights(tinyConfig({ vocabSize: 2000 }), 3), w2 = tinyWeights(tinyConfig({ vocabSize: 2000, text: { numHiddenLayers: 3 } }), 3);
    expect(w2['model.layers.1.self_attn.q_proj.weight'].data).toEqual(w1['model.layers.1.self_attn.q_proj.weight'].data);
  });

  it('has the Qwen architecture at toy sizes, the real vocabulary and ids, BF16 untied weights', () => {
    const cfg = tinyConfig();
    expect(cfg.text).toMatchObject({ vocabSize: 151936, hiddenSize: 128, numHiddenLayers: 2, numAttentionHeads: 8, numKeyValueHeads: 2, intermediateSize: 320, headDim: 16, tieWordEmbeddings: false });
    expect(cfg.vision).toMatchObject({ depth: 4, hiddenSize: 32, numHeads: 2, intermediateSize: 64, fullattBlockIndexes: [1, 3], outHiddenSize: 128 });
    expect([cfg.eosTokenIds[0], cfg.imageTokenId, cfg.videoTokenId, cfg.visionStartTokenId, cfg.visionEndTokenId]).toEqual([151645, 151655, 151656, 151652, 151653]);
    const w = tinyWeights(cfg, 0);
    expect(w['lm_head.weight'].shape).toEqual([151936, 128]);
    expect(tinyWeights(tinyConfig({ tieWordEmbeddings: true }), 0)['lm_head.weight']).toBeUndefined();
    expect(Object.values(w).every((t) => t.dtype === 'bf16')).toBe(true);
    // torch's default init: U(±1/√fan_in) for linears (bias with its weight's bound), N(0,1) input embedding
    const q = bf16ToF32(w['model.layers.0.self_attn.q_proj.weight'].data as Uint16Array);
    const bound = 1 / Math.sqrt(128);
    expect(Math.max(...q.map(Math.abs))).toBeLessThanOrEqual(bound * 1.01);
    expect(Math.max(...q.map(Math.abs))).toBeGreaterThan(bound * 0.9);
    const pe = bf16ToF32(w['visual.patch_embed.proj.weight'].data as Uint16Array);
    expect(Math.max(...pe.map(Math.abs))).toBeLessThanOrEqual(1.01 / Math.sqrt(1176));
    const e = bf16ToF32((w['model.embed_tokens.weight'].data as Uint16Array).subarray(0, 64000));
    const mean = e.reduce((a, x) => a + x, 0) / e.length, sd = Math.sqrt(e.reduce((a, x) => a + (x - mean) ** 2, 0) / e.length);
    expect(Math.abs(mean)).toBeLessThan(0.02);
    expect(Math.abs(sd - 1)).toBeLessThan(0.02);
    const vb = bf16ToF32(w['visual.blocks.0.attn.qkv.bias'].data as Uint16Array);
    expect(Math.max(...vb.map(Math.abs))).toBeLessThanOrEqual(1.01 / Math.sqrt(32));
    expect(tinySpecialIds(1000).imagePad).toBe(1000 - 16 + 12);
    expect(tinySpecialIds()).toBe(QWEN_IDS);
  });

  describe('as a Hugging Face folder', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'pw-tiny-'));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('writes config, tokenizer files, preprocessor config and sharded safetensors that load back', async () => {
      const written = await writeTinyModelFolder(dir, { seed: 1, maxShardBytes: 8 << 20 });
      const names = (await readdir(dir)).sort();
      expect(names).toEqual(written);
      expect(names).toEqual(expect.arrayContaining(['config.json', 'generation_config.json', 'model.safetensors.index.json', 'preprocessor_config.json', 'tokenizer_config.json']));
      expect(names.filter((n) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(n)).length).toBeGreaterThanOrEqual(2);
      if (qwenTokenizerJsonPath()) {
        const tok = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8'));
        const added = new Map(tok.added_tokens.map((t: { id: number; content: string }) => [t.content, t.id]));
        expect(added.get('<|image_pad|>')).toBe(151655);
        expect(added.get('<|im_start|>')).toBe(151644);
        expect(added.get('<|vision_start|>')).toBe(151652);
      }
      const idx = JSON.parse(await readFile(join(dir, 'model.safetensors.index.json'), 'utf8'));
      expect(idx.metadata.total_size).toBe(Object.values(tinyWeights(tinyConfig({ seed: 1 }), 1)).reduce((a, w) => a + w.data.byteLength, 0));
      const pre = JSON.parse(await readFile(join(dir, 'preprocessor_config.json'), 'utf8'));
      expect(pre).toMatchObject({ patch_size: 14, merge_size: 2, temporal_patch_size: 2, min_pixels: 3136, max_pixels: 1003520 });
      const m = await loadModel(await dirSource(dir));
      expect(Object.keys(m.weights).length).toBe(Object.keys(tinyWeights(m.config, 1)).length);
    });
  });

  it('generates deterministically with the CPU reference (image prompt, real ids)', () => {
    const cfg = tinyConfig({ seed: 2 });
    const model = new CpuModel(cfg, tinyWeights(cfg, 2));
    // one 56x56 image: grid (1, 4, 4) -> 4 image tokens
    const pv = new Float32Array(16 * 1176).map((_, i) => Math.sin(i * 0.37));
    const I = QWEN_IDS;
    const ids = [I.imStart, 872, 198, I.visionStart, I.imagePad, I.imagePad, I.imagePad, I.imagePad, I.visionEnd, 3838, 374, 419, 30, I.imEnd, 198, I.imStart, 77091, 198];
    const a = model.generate({ inputIds: ids, pixelValues: pv, imageGridThw: [1, 4, 4], maxNewTokens: 4 });
    const b = model.generate({ inputIds: ids, pixelValues: pv, imageGridThw: [1, 4, 4], maxNewTokens: 4 });
    expect(a).toEqual(b);
    expect(a.length).toBeGreaterThan(0);
    expect(a.every((t) => t >= 0 && t < 151936)).toBe(true);
    // greedy = argmax of the full forward's last row
    const full = model.forward({ inputIds: ids, pixelValues: pv, imageGridThw: [1, 4, 4] });
    const last = full.logits.subarray((ids.length - 1) * 151936);
    let best = 0;
    for (let i = 1; i < last.length; i++) if (last[i] > last[best]) best = i;
    expect(a[0]).toBe(best);
  });
});

describe('Cache API store', () => {
  it('round-trips bytes through a CacheStorage', async () => {
    const stores = new Map<string, Map<string, Response>>();
    const fake = {
      open: async (name: string) => {
        const m = stores.get(name) ?? new Map<string, Response>();
        stores.set(name, m);
        return { match: async (k: string) => m.get(k)?.clone(), put: async (k: string, r: Response) => void m.set(k, r) };
      },
    } as unknown as CacheStorage;
    const c = cacheApiStore('test', fake);
    expect(await c.get('https://x/a?patchwork-bytes=0-7')).toBeUndefined();
    await c.put('https://x/a?patchwork-bytes=0-7', new Uint8Array([1, 2, 3]).subarray(1));
    expect(await c.get('https://x/a?patchwork-bytes=0-7')).toEqual(new Uint8Array([2, 3]));
    expect(() => cacheApiStore('x', undefined)).toThrow(/Cache API is not available/);
  });
});
