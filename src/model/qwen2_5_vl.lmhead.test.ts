// The fused lm_head (ops/lmHead.ts) against the earlier chunked path inside the model: the same
// logps, hits and LoRA gradients, at temperature 1 and 0.7, in one and in several row blocks,
// with a value head's dhidden, and several vocabulary shards.
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { readMany } from '../gpu/tensor.ts';
import { dirSource } from './sources/node.ts';
import { loadModel } from './weights.ts';
import { loadAdapter } from './lora.ts';
import { Qwen2_5_VL, type SeqInput } from './qwen2_5_vl.ts';
import { GoldenCase } from '../parity/golden.ts';

const root = resolve(__dirname, '../../../shared/golden');
let model: Qwen2_5_VL;
let seq: SeqInput;

beforeAll(async () => {
  await nodeGpu();
  // vocabulary in shards of 300 rows: the lm_head runs over several shards, the last one short
  model = await Qwen2_5_VL.load(await dirSource(`${root}/tiny-qwen2_5_vl`), { vocabChunk: 300 });
  const ref = await loadModel(await dirSource(`${root}/tiny-qwen2_5_vl`));
  model.setAdapter(await loadAdapter(await dirSource(`${root}/tiny-lora`), ref.config));
  const c = new GoldenCase(`${root}/cases/lora_sft__one_image.safetensors`, root);
  seq = { inputIds: c.i32('input.input_ids'), images: { pixelValues: c.f32('input.pixel_values'), imageGridThw: c.i32('input.image_grid_thw') }, scoreStart: 20 };
});
afterAll(async () => {
  model?.dispose();
  await closeGpu();
});

describe('fused vs chunked lm_head in the model', () => {
  it('same logps, hits, lastHidden and gradients (temperature 1 and 0.7, row blocks, value head)', async () => {
    expect(model.config.text.vocabSize).toBeGreaterThan(600);
    const S = seq.inputIds.length - seq.scoreStart, H = model.config.text.hiddenSize;
    const d = Float32Array.from({ length: S }, (_, i) => ((i % 5) - 2) / 3);
    const dh = Float32Array.from({ length: S * H }, (_, i) => Math.sin(i) * 1e-2);
    const run = async (path: 'fused' | 'chunked', temperature: number, rowBlock?: number) => {
      model.lmHead = path;
      model.scoreRowBlock = rowBlock;
      model.zeroGrads();
      const r = await model.logps(seq, { lora: true, train: true, hidden: true, temperature });
      model.backward(d, dh);
      const g = (await readMany(model.loraParams().map((p) => p.grad))) as Float32Array[];
      return { ...r, g };
    };
    for (const temperature of [1, 0.7]) {
      const a = await run('chunked', temperature);
      for (const rowBlock of [undefined, 5]) {
        const b = await run('fused', temperature, rowBlock);
        b.logps.forEach((v, i) => expect(Math.abs(v - a.logps[i]), `logp ${i}`).toBeLessThan(2e-5));
        expect(Array.from(b.hits)).toEqual(Array.from(a.hits));
        expect(b.lastHidden).toEqual(a.lastHidden);
        let err = 0, scale = 0;
        b.g.forEach((x, i) => x.forEach((v, j) => { err = Math.max(err, Math.abs(v - a.g[i][j])); scale = Math.max(scale, Math.abs(a.g[i][j])); }));
        expect(err / scale, `gradients at T ${temperature}, row block ${rowBlock}`).toBeLessThan(1e-4);
      }
    }
    model.lmHead = undefined;
    model.scoreRowBlock = undefined;
  });
});
