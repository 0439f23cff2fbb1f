// The bench's own machinery: the JSON report, the op-kind profile, the synthetic model folder and
// the step input PyTorch must rebuild (scripts/device/torch_step.py). Timing is never asserted.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { opKind, startProfile, stopProfile } from '../gpu/kernel.ts';
import { fromData, read } from '../gpu/tensor.ts';
import { matmul, recordGemms, takeGemms, gemmFlops } from '../ops/matmul.ts';
import { rmsnorm } from '../ops/rmsnorm.ts';
import { parseConfig, QWEN2_5_VL_3B_CONFIG_JSON } from '../model/config.ts';
import { bf16ToF32 } from '../gpu/bf16.ts';
import { expectedWeights, loadWeights } from '../model/weights.ts';
import { Report } from './report.ts';
import { sliceConfigJson, stepInput, syntheticSource } from './step.ts';
import fixture from './fixtures/step_input.json';

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

describe('bench report', () => {
  it('keeps the schema: known groups only, numbers rounded, null for failures; written atomically', () => {
    const r = new Report('test adapter', ['timestamp-query', 'subgroups']);
    r.add({ group: 'matmul', name: 'a', shape: '1×2×3', ours_ms: 1.23456789, peers: { ort: 2.5, tfjs: Infinity } });
    expect(() => r.add({ group: 'nope' as 'matmul', name: 'b', shape: '', ours_ms: 1, peers: {} })).toThrow(/group "nope"/);
    expect(() => r.add({ group: 'step', name: '', shape: '', ours_ms: 1, peers: {} })).toThrow(/no name/);
    const dir = mkdtempSync(join(tmpdir(), 'bench-report-'));
    const file = join(dir, 'sub', 'bench.json');
    r.write(file);
    const back = JSON.parse(readFileSync(file, 'utf8'));
    expect(back.adapter).toBe('test adapter');
    expect(back.features).toEqual(['subgroups', 'timestamp-query']);
    expect(back.rows).toEqual([{ group: 'matmul', name: 'a', shape: '1×2×3', ours_ms: 1.235, peers: { ort: 2.5, tfjs: null } }]);
    expect(readdirSync(join(dir, 'sub'))).toEqual(['bench.json']); // no temp file left
  });
});

describe('op-kind profile', () => {
  it('classifies dispatches by shader and vocabulary weights', () => {
    const lm = fromData(new Float32Array(4), [2, 2], 'f32', 'model.embed_tokens.weight[0:2]');
    expect(opKind('matmul.wgsl', [undefined, lm])).toBe('lm_head');
    expect(opKind('matmul.wgsl', [])).toBe('matmul');
    expect(opKind('softmax_gather.wgsl', [])).toBe('lm_head');
    expect(opKind('attention.wgsl', [])).toBe('attention');
    expect(opKind('flash_attention.wgsl', [])).toBe('attention');
    expect(opKind('rmsnorm.wgsl', [])).toBe('norm');
    expect(opKind('adamw.wgsl', [])).toBe('optimizer');
    expect(opKind('swiglu.wgsl', [])).toBe('other');
    lm.release();
  });

  for (const mode of ['timestamp', 'flush'] as const) {
    it(`splits GPU time by kind (${mode}) and leaves results unchanged`, async () => {
      const x = fromData(Float32Array.from({ length: 24 * 32 }, (_, i) => Math.sin(i)), [24, 32]);
      const w = fromData(Float32Array.from({ length: 16 * 32 }, (_, i) => Math.cos(i)), [16, 32]);
      const nw = fromData(new Float32Array(16).fill(1), [16]);
      const plain = await read(rmsnorm(matmul(x, w), nw, 1e-6).y);
      recordGemms();
      startProfile(mode);
      const y = matmul(x, w);
      const n = rmsnorm(y, nw, 1e-6);
      matmul(x, w, { out: y });
      const p = await stopProfile();
      const calls = takeGemms();
      expect(p.mode).toBe(mode === 'timestamp' ? 'timestamp-query' : 'flushed groups');
      expect(p.dispatches.matmul).toBe(2);
      expect(p.dispatches.norm).toBeGreaterThanOrEqual(1);
      expect(p.segments).toBe(3); // matmul | norm | matmul
      expect(p.ms.matmul).toBeGreaterThan(0);
      expect(p.ms.norm).toBeGreaterThan(0);
      expect(p.ms.attention).toBe(0);
      expect(calls).toEqual([expect.objectContaining({ M: 24, N: 16, K: 32, count: 2, transB: true })]);
      expect(gemmFlops(calls[0])).toBe(2 * 2 * 24 * 16 * 32);
      expect(await read(n.y)).toEqual(plain);
      for (const t of [x, w, nw, y, n.y, n.rstd]) t.release();
    });
  }
});

describe('3B-width slice', () => {
  it('config: 3B widths, 2 layers, 4 vision blocks with the last one full attention', () => {
    const c = parseConfig(sliceConfigJson(2, 4));
    expect([c.text.hiddenSize, c.text.intermediateSize, c.text.numAttentionHeads, c.text.numKeyValueHeads, c.text.numHiddenLayers, c.text.vocabSize]).toEqual([2048, 11008, 16, 2, 2, 151936]);
    expect([c.vision.hiddenSize, c.vision.intermediateSize, c.vision.numHeads, c.vision.depth]).toEqual([1280, 3420, 16, 4]);
    expect(c.vision.fullattBlockIndexes).toEqual([3]);
    expect(QWEN2_5_VL_3B_CONFIG_JSON.num_hidden_layers).toBe(36); // the published config is untouched
  });

  it('synthetic safetensors: every expected tensor, BF16, ranges agree with whole reads, values in their bounds', async () => {
    const j = sliceConfigJson(1, 1) as Record<string, unknown> & { vision_config: Record<string, unknown> };
    Object.assign(j, { hidden_size: 32, intermediate_size: 48, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 151936, rope_scaling: { type: 'mrope', mrope_section: [1, 1, 2] } });
    Object.assign(j.vision_config, { hidden_size: 16, intermediate_size: 24, num_heads: 2, out_hidden_size: 32 });
    const src = syntheticSource(j, 3);
    const whole = await src.read('model.safetensors');
    const part = await src.readRange('model.safetensors', 1001, 5003);
    expect(part).toEqual(whole.subarray(1001, 5003));
    const cfg = parseConfig(j);
    const { weights } = await loadWeights(src, cfg);
    const expected = expectedWeights(cfg);
    expect(Object.keys(weights).sort()).toEqual([...expected.keys()].sort());
    const f32 = (w: (typeof weights)[string]) => (w.dtype === 'bf16' ? bf16ToF32(w.data as Uint16Array) : (w.data as Float32Array));
    const qv = f32(weights['model.layers.0.self_attn.q_proj.weight']), bound = 1 / Math.sqrt(32);
    expect(Math.max(...qv.map(Math.abs))).toBeLessThanOrEqual(bound * 1.01);
    expect(Math.max(...qv.map(Math.abs))).toBeGreaterThan(bound * 0.9);
    const norm = f32(weights['model.norm.weight']);
    expect(Math.min(...norm)).toBeGreaterThan(0.89);
    expect(Math.max(...norm)).toBeLessThan(1.11);
  });

  it('the step input is the one scripts/device/torch_step.py builds (fixture from Python)', () => {
    const cfg = parseConfig(sliceConfigJson(2, 4));
    const s = stepInput(cfg);
    expect(Array.from(s.inputIds)).toEqual(fixture.ids);
    expect(Array.from(s.images!.imageGridThw)).toEqual(fixture.grid);
    expect(s.scoreStart).toBe(fixture.scored_from);
    const px = s.images!.pixelValues;
    expect(px.length).toBe(fixture.pixels_len);
    for (let i = 0; i < 8; i++) expect(px[i]).toBeCloseTo(fixture.pixels_head[i], 6);
    expect(px[70001]).toBeCloseTo(fixture.pixels_at_70001, 6);
    let sum = 0;
    for (const v of px) sum += v;
    expect(sum).toBeCloseTo(fixture.pixels_sum, 1);
  });
});

