// Parity and debugging: a forward with every golden intermediate read back (slow), and the vision
// tower alone. Beside the model class, which keeps the forward and backward; reads its parts through
// Qwen2_5_VL.captureHost().
import { readMany } from '../gpu/tensor.ts';
import { rmsnorm } from '../ops/rmsnorm.ts';
import { layerForward } from './text.ts';
import { visionForward, type VisionCapture } from './vision.ts';
import type { ImageInput } from './imageCache.ts';
import type { Qwen2_5_VL } from './qwen2_5_vl.ts';

/** The golden model_forward intermediates. */
export interface ForwardCapture {
  imageEmbeds?: Float32Array;
  vision?: VisionCapture;
  inputsEmbeds: Float32Array;
  positionIds: Int32Array;
  ropeDelta: number;
  layerOut: Float32Array[];
  lastHiddenState: Float32Array;
  /** [L, V] every row (computed in chunks; small models only) */
  logits?: Float32Array;
}

/** The vision tower alone (uncached, with the adapter when `lora`), image_embeds read back; with capture, its intermediates. */
export async function captureVision(model: Qwen2_5_VL, img: ImageInput, opts: { capture?: boolean; lora?: boolean } = {}): Promise<{ imageEmbeds: Float32Array; capture?: VisionCapture }> {
const m = model.captureHost();
const r = await visionForward(m.ctx(opts.lora ?? false), img.pixelValues, img.imageGridThw, { capture: opts.capture });
  const [e] = await readMany([r.imageEmbeds]);
  r.imageEmbeds.release();
  return { imageEmbeds: e as Float32Array, capture: r.capture };
}

/** Forward with every golden intermediate read back (slow; for parity and debugging). */
export async function captureForward(model: Qwen2_5_VL, seq: { inputIds: Int32Array; images?: ImageInput }, opts: { lora?: boolean; logits?: boolean; vision?: boolean } = {}): Promise<ForwardCapture> {
const m = model.captureHost();
const ctx = m.ctx(opts.lora ?? false);
const p = await m.prepare(seq, ctx, { captureVision: opts.vision ?? false });
  const out: Partial<ForwardCapture> = { positionIds: p.positionIds, ropeDelta: p.ropeDelta, layerOut: [], vision: p.vision };
  const img = p.imageEmbeds;
  if (img) {
    out.imageEmbeds = (await readMany([img]))[0] as Float32Array;
    img.release();
  }
  out.inputsEmbeds = (await readMany([p.x]))[0] as Float32Array;
  let x = p.x;
  for (let li = 0; li < m.config.text.numHiddenLayers; li++) {
    const r = layerForward(ctx, li, x, p.rope, { keep: false });
    x.release();
    x = r.out;
    out.layerOut!.push((await readMany([x]))[0] as Float32Array);
  }
  const nf = rmsnorm(x, m.finalNorm, m.config.text.rmsNormEps);
  for (const t of [x, nf.rstd, p.rope.cos, p.rope.sin]) t.release();
  out.lastHiddenState = (await readMany([nf.y]))[0] as Float32Array;
  if (opts.logits) out.logits = await m.allLogits(ctx, nf.y);
  nf.y.release();
  return out as ForwardCapture;
}
