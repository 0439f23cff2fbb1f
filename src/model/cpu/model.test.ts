// The CPU reference model against the golden vectors (shared/golden/README.md §7, §8, §10).
import { beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { check, checkExact, GoldenCase, TOL, type Check } from '../../parity/golden.ts';
import { loadModel, type LoadedModel } from '../weights.ts';
import { loadAdapter, type LoraAdapter } from '../lora.ts';
import { dirSource } from '../sources/node.ts';
import { CpuModel } from './model.ts';
import { erf } from './math.ts';

const root = fileURLToPath(new URL('../../../../shared/golden/', import.meta.url));
const gcase = (name: string) => new GoldenCase(`${root}cases/${name}.safetensors`, root);

let m: LoadedModel, adapter: LoraAdapter;
beforeAll(async () => {
  m = await loadModel(await dirSource(root + 'tiny-qwen2_5_vl'));
  adapter = await loadAdapter(await dirSource(root + 'tiny-lora'), m.config);
});

/** every check passes; the max errors are printed for the report */
function expectAll(label: string, checks: Check[]) {
  console.log(`${label}: ${checks.map((c) => `${c.name} ${c.err.toExponential(1)}`).join(', ')}`);
  for (const c of checks) expect(c.err, `${label} ${c.name} (tol ${c.tol})`).toBeLessThanOrEqual(c.tol);
}

describe('CPU reference vs golden', () => {
  it('vision_forward__multi_image', () => {
    const c = gcase('vision_forward__multi_image');
    const v = new CpuModel(m.config, m.weights).vision(c.f32('input.pixel_values'), c.i32('input.image_grid_thw'), { capture: true });
    const checks = [
      check('patch_embeds', v.patchEmbeds!, c.f32('expect.patch_embeds'), TOL.vision),
      check('rope_freqs', v.ropeFreqs!, c.f32('expect.rope_freqs'), TOL.vision),
      checkExact('window_index', v.windowIndex!, c.i32('expect.window_index')),
      checkExact('cu_window_seqlens', v.cuWindowSeqlens!, c.i32('expect.cu_window_seqlens')),
      checkExact('cu_seqlens', v.cuSeqlens!, c.i32('expect.cu_seqlens')),
      ...v.blockOut!.map((b, i) => check(`block${i}_out`, b, c.f32(`expect.block${i}_out`), TOL.vision)),
      check('merger_out_windowed', v.mergerOutWindowed!, c.f32('expect.merger_out_windowed'), TOL.vision),
      check('image_embeds', v.imageEmbeds, c.f32('expect.image_embeds'), TOL.vision),
    ];
    expect(v.blockOut!.length).toBe(c.names('expect.block').length);
    expectAll('vision_forward', checks);
  });

  for (const tag of ['one_image', 'two_images', 'text_only']) {
    it(`model_forward__${tag}`, () => {
      const c = gcase(`model_forward__${tag}`);
      const hasImage = c.has('input.pixel_values');
      const r = new CpuModel(m.config, m.weights).forward({
        inputIds: c.i32('input.input_ids'),
        pixelValues: hasImage ? c.f32('input.pixel_values') : undefined,
        imageGridThw: hasImage ? c.i32('input.image_grid_thw') : undefined,
        capture: true,
      });
      const checks = [
        ...(hasImage ? [check('image_embeds', r.imageEmbeds!, c.f32('expect.image_embeds'), TOL.vision)] : []),
        check('inputs_embeds', r.inputsEmbeds!, c.f32('expect.inputs_embeds'), TOL.model),
        checkExact('position_ids', r.positionIds, c.i32('expect.position_ids')),
        checkExact('rope_delta', [r.ropeDelta], c.i32('expect.rope_delta')),
        ...r.layerOut!.map((x, i) => check(`layer${i}_out`, x, c.f32(`expect.layer${i}_out`), TOL.model)),
        check('last_hidden_state', r.lastHiddenState!, c.f32('expect.last_hidden_state'), TOL.model),
        check('logits', r.logits, c.f32('expect.logits'), TOL.model),
      ];
      expect(r.layerOut!.length).toBe(c.names('expect.layer').length);
      expectAll(`model_forward__${tag}`, checks);
    });
  }

  it('lora_sft__one_image logits with the adapter (and the loss from them)', () => {
    const c = gcase('lora_sft__one_image');
    const model = new CpuModel(m.config, m.weights, adapter);
    const input = { inputIds: c.i32('input.input_ids'), pixelValues: c.f32('input.pixel_values'), imageGridThw: c.i32('input.image_grid_thw') };
    const r = model.forward(input);
    const V = m.config.text.vocabSize, L = input.inputIds.length, labels = c.i32('input.labels');
    const nll = new Float32Array(L - 1);
    let sum = 0, n = 0;
    for (let t = 0; t < L - 1; t++) {
      if (labels[t + 1] === -100) continue;
      const row = r.logits.subarray(t * V, (t + 1) * V);
      let mx = -Infinity;
      for (const x of row) mx = Math.max(mx, x);
      let se = 0;
      for (const x of row) se += Math.exp(x - mx);
      nll[t] = mx + Math.log(se) - row[labels[t + 1]];
      sum += nll[t];
      n++;
    }
    expect(n).toBe(c.num('num_loss_tokens'));
    expectAll('lora_sft', [
      check('image_embeds', r.imageEmbeds!, c.f32('expect.image_embeds'), TOL.vision),
      check('logits', r.logits, c.f32('expect.logits'), TOL.model),
      check('per_token_nll', nll, c.f32('expect.per_token_nll'), TOL.train),
      check('loss', [sum / n], c.f32('expect.loss'), TOL.train),
    ]);
    // with the adapter off the logits differ (the adapter matters), and equal the base model's
    const off = model.forward({ ...input, lora: false, imageEmbeds: r.imageEmbeds });
    expect(check('logits', off.logits, c.f32('expect.logits'), TOL.model).pass).toBe(false);
    const base = new CpuModel(m.config, m.weights).forward(input);
    expect(off.logits).toEqual(base.logits);
  });

  it('greedy generation equals step-by-step argmax of full forwards', () => {
    const c = gcase('model_forward__one_image');
    const model = new CpuModel(m.config, m.weights, adapter);
    const ids = Array.from(c.i32('input.input_ids'));
    const input = { pixelValues: c.f32('input.pixel_values'), imageGridThw: c.i32('input.image_grid_thw') };
    const out = model.generate({ ...input, inputIds: ids, maxNewTokens: 3, stopIds: [] });
    expect(out.length).toBe(3);
    const seq = ids.slice();
    for (const tok of out) {
      const r = model.forward({ ...input, inputIds: seq });
      const V = m.config.text.vocabSize, row = r.logits.subarray((seq.length - 1) * V, seq.length * V);
      let best = 0;
      for (let i = 1; i < V; i++) if (row[i] > row[best]) best = i;
      expect(tok).toBe(best);
      seq.push(tok);
    }
  });

  it('names bad inputs', () => {
    const model = new CpuModel(m.config, m.weights);
    const img = m.config.imageTokenId;
    expect(() => model.forward({ inputIds: [1, img, 2] })).toThrow(/1 image tokens but no pixel_values/);
    expect(() => model.forward({ inputIds: [1, 5000] })).toThrow(/token id 5000 is outside the vocabulary \(1024\)/);
    expect(() => model.forward({ inputIds: [1, m.config.visionStartTokenId, img, img, m.config.visionEndTokenId], pixelValues: new Float32Array(16 * 1176), imageGridThw: [1, 4, 4] })).toThrow(/2 image tokens but the images give 4 features/);
    expect(() => model.vision(new Float32Array(10), [1, 4, 4])).toThrow(/pixel_values has 10 values, image_grid_thw implies \[16, 1176\]/);
  });

  it('erf is accurate', () => {
    // values from a double-precision erf
    const ref: [number, number][] = [[0.1, 0.1124629160182849], [0.5, 0.5204998778130465], [1, 0.8427007929497149], [2, 0.9953222650189527], [-3.2, -0.9999939742388483], [4.1, 0.9999999932999724]];
    for (const [x, y] of ref) expect(Math.abs(erf(x) - y)).toBeLessThan(1e-15);
  });
});
