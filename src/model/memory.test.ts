import { describe, expect, it } from 'vitest';
import { parseConfig, QWEN2_5_VL_3B_CONFIG_JSON } from './config.ts';
import { defaultLoraConfig, loraParamCount, targetRegex, TEXT_LORA_MODULES } from './lora.ts';
import { checkMemory, DEFAULT_LIMITS, estimateMemory, formatEstimate, neededSplits } from './memory.ts';
import { tinyConfig } from './tiny.ts';

const cfg3b = parseConfig(QWEN2_5_VL_3B_CONFIG_JSON);
const req = (recompute: boolean) => ({ config: cfg3b, lora: defaultLoraConfig(), images: [{ height: 448, width: 448 }], textTokens: 64, recompute });

describe('memory estimate', () => {
  it('counts the 3B model: 3.75 B params, 256 image tokens for 448×448, LoRA r=16 on all text projections', () => {
    const e = estimateMemory(req(false));
    console.log(formatEstimate(e));
    console.log(formatEstimate(estimateMemory(req(true))));
    expect(e.weights.params).toBeGreaterThan(3.7e9);
    expect(e.weights.params).toBeLessThan(3.8e9);
    expect(e.weights.embeddingBytes).toBe(151936 * 2048 * 2);
    expect([e.patches, e.imageTokens, e.seqLen]).toEqual([1024, 256, 320]);
    // per layer: r·(in+out) summed over q,k,v,o,gate,up,down
    const perLayer = 16 * ((2048 + 2048) + 2 * (2048 + 256) + (2048 + 2048) + 3 * (2048 + 11008));
    expect(e.lora.params).toBe(36 * perLayer);
    expect(e.lora.params).toBe(loraParamCount(cfg3b, defaultLoraConfig()));
    expect(e.lora.bytes).toBe(16 * e.lora.params);
    // gate/up/act dominate a layer: 3 × 320 × 11008 × 4 bytes
    expect(e.activations.perLayer.find((x) => x.name === 'gate')!.bytes).toBe(320 * 11008 * 4);
  });

  it('recomputation keeps only layer inputs', () => {
    const a = estimateMemory(req(false)), b = estimateMemory(req(true));
    expect(a.activations.keptBytes).toBe(36 * a.activations.perLayerBytes);
    expect(b.activations.keptBytes).toBe(36 * 320 * 2048 * 4);
    expect(b.activations.recomputeBytes).toBe(a.activations.perLayerBytes);
    expect(b.totalBytes).toBeLessThan(a.totalBytes - 1.5 * 2 ** 30);
    expect(a.weights.bytes).toBe(b.weights.bytes);
  });

  it('reports the splits the embedding needs and refuses with numbers', () => {
    const e = estimateMemory(req(true));
    const s = neededSplits(e.buffers, DEFAULT_LIMITS);
    expect(s).toEqual([{ name: 'model.embed_tokens.weight', bytes: 622329856, limit: 128 * 2 ** 20, parts: 5 }]);
    expect(neededSplits(e.buffers, { maxBufferSize: 2 ** 30, maxStorageBufferBindingSize: 2 ** 30 })).toEqual([]);
    const refuse = checkMemory(e, DEFAULT_LIMITS);
    expect(refuse.ok).toBe(false);
    expect(refuse.message).toMatch(/model\.embed_tokens\.weight is 593\.5 MiB, above the adapter's buffer limit of 128\.0 MiB: it needs 5 buffers/);
    expect(checkMemory(e, DEFAULT_LIMITS, { canSplit: true }).ok).toBe(true);
    const small = checkMemory(estimateMemory(req(false)), { maxBufferSize: 2 ** 31, maxStorageBufferBindingSize: 2 ** 31 }, { budgetBytes: 8 * 2 ** 30 });
    expect(small.ok).toBe(false);
    expect(small.message).toMatch(/needs about 9\.\d\d GiB of GPU memory \(weights 6\.99 GiB, LoRA \+ AdamW 456\.8 MiB, activations 2\.\d\d GiB\) but only 8\.00 GiB is available; turn on recomputation/);
    expect(checkMemory(e, { maxBufferSize: 2 ** 31, maxStorageBufferBindingSize: 2 ** 31 }, { budgetBytes: 8 * 2 ** 30 }).ok).toBe(true);
  });

  it('applies smart_resize, scales with batch and counts a trained vision tower', () => {
    const tiny = tinyConfig();
    const base = { config: tiny, lora: defaultLoraConfig(), images: [{ height: 500, width: 300 }], textTokens: 10, recompute: false };
    const e = estimateMemory(base);
    expect(e.imageTokens).toBe((504 / 28) * (308 / 28)); // smart_resize(500, 300) = (504, 308)
    const b2 = estimateMemory({ ...base, batch: 2 });
    expect(b2.activations.keptBytes).toBeCloseTo(2 * e.activations.keptBytes, -3);
    const vis = estimateMemory({ ...base, lora: defaultLoraConfig({ targetModules: targetRegex(TEXT_LORA_MODULES, ['attn.qkv']) }) });
    expect(vis.activations.visionKeptBytes).toBeGreaterThan(0);
    expect(e.activations.visionKeptBytes).toBe(0);
    expect(() => estimateMemory({ ...base, images: [{ height: 30, width: 30 }], resized: true })).toThrow(/not a multiple of 28/);
  });
});
