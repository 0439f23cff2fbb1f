// Golden handlers for the GPU model (README §7 vision_forward, §8 model_forward). The model is
// loaded once per model folder (the case's meta.model under the golden root) and reused.
import { join } from 'node:path';
import { nodeGpu } from '../gpu/node.ts';
import { gpu } from '../gpu/device.ts';
import { dirSource } from '../model/sources/node.ts';
import { Qwen2_5_VL } from '../model/qwen2_5_vl.ts';
import { check, checkExact, TOL, type CaseHandler, type Check, type GoldenCase } from './golden.ts';
import { captureVision, captureForward } from '../model/capture.ts';

const loaded = new Map<string, { device: GPUDevice; model: Promise<Qwen2_5_VL> }>();

/** The case's model (meta.model under the golden root), loaded once per device. */
export async function goldenModel(c: GoldenCase): Promise<Qwen2_5_VL> {
  await nodeGpu();
  const dir = join(c.root, c.meta.model ?? '');
  if (!c.meta.model) throw new Error(`${c.file}: metadata "model" missing`);
  const device = gpu().device;
  let e = loaded.get(dir);
  if (!e || e.device !== device) {
    const model = dirSource(dir).then((src) => Qwen2_5_VL.load(src));
    model.catch(() => loaded.delete(dir));
    loaded.set(dir, (e = { device, model }));
  }
  return e.model;
}

/** Dispose every model the handlers loaded (tests call it before closing the device). */
export function disposeGoldenModels(): void {
  for (const e of loaded.values()) void e.model.then((m) => m.dispose(), () => undefined);
  loaded.clear();
}

async function visionForwardCase(c: GoldenCase): Promise<Check[]> {
  const m = await goldenModel(c);
  const r = await captureVision(m, { pixelValues: c.f32('input.pixel_values'), imageGridThw: c.i32('input.image_grid_thw') }, { capture: true });
  const v = r.capture!, emb = r.imageEmbeds;
  const blocks = c.names('expect.block').map((n) => Number(/block(\d+)_out/.exec(n)![1])).sort((a, b) => a - b);
  return [
    check('patch_embeds', v.patchEmbeds, c.f32('expect.patch_embeds'), TOL.vision),
    check('rope_freqs', v.ropeFreqs, c.f32('expect.rope_freqs'), TOL.vision),
    checkExact('window_index', v.windowIndex, c.i32('expect.window_index')),
    checkExact('cu_window_seqlens', v.cuWindowSeqlens, c.i32('expect.cu_window_seqlens')),
    checkExact('cu_seqlens', v.cuSeqlens, c.i32('expect.cu_seqlens')),
    checkExact('depth', [v.blockOut.length], [blocks.length]),
    ...blocks.map((i) => check(`block${i}_out`, v.blockOut[i] ?? [], c.f32(`expect.block${i}_out`), TOL.vision)),
    check('merger_out_windowed', v.mergerOutWindowed, c.f32('expect.merger_out_windowed'), TOL.vision),
    check('image_embeds', emb, c.f32('expect.image_embeds'), TOL.vision),
  ];
}

async function modelForwardCase(c: GoldenCase): Promise<Check[]> {
  const m = await goldenModel(c);
  const images = c.has('input.pixel_values') ? { pixelValues: c.f32('input.pixel_values'), imageGridThw: c.i32('input.image_grid_thw') } : undefined;
  const r = await captureForward(m, { inputIds: c.i32('input.input_ids'), images }, { lora: false, logits: true, vision: !!images });
  const layers = c.names('expect.layer').map((n) => Number(/layer(\d+)_out/.exec(n)![1])).sort((a, b) => a - b);
  return [
    ...(c.has('expect.image_embeds') ? [check('image_embeds', r.imageEmbeds ?? [], c.f32('expect.image_embeds'), TOL.vision)] : []),
    check('inputs_embeds', r.inputsEmbeds, c.f32('expect.inputs_embeds'), TOL.model),
    checkExact('position_ids', r.positionIds, c.i32('expect.position_ids')),
    checkExact('rope_delta', [r.ropeDelta], c.i32('expect.rope_delta')),
    checkExact('layers', [r.layerOut.length], [layers.length]),
    ...layers.map((i) => check(`layer${i}_out`, r.layerOut[i] ?? [], c.f32(`expect.layer${i}_out`), TOL.model)),
    check('last_hidden_state', r.lastHiddenState, c.f32('expect.last_hidden_state'), TOL.model),
    check('logits', r.logits!, c.f32('expect.logits'), TOL.model),
  ];
}

export const modelCases: Record<string, CaseHandler> = {
  vision_forward: visionForwardCase,
  model_forward: modelForwardCase,
};
