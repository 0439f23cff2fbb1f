// Vision patch embedding: Conv3d with kernel == stride (temporal 2, spatial 14×14), no bias.
// Each patch row of pixel_values [N, C·T·P·P] (flattened (c, t, y, x), as the HF processor
// emits it) meets each output channel's kernel once, so the conv is exactly a matmul with the
// weight viewed [Co, C·T·P·P]: out = pv·Wᵀ, dW = dyᵀ·pv, dpv = dy·W. No dedicated shader.
import { GpuError } from '../gpu/device.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { matmul, matmulBackwardInput, matmulBackwardWeight } from './matmul.ts';

function flatWeight(weight: Tensor, pv: Tensor, op: string): Tensor {
  const co = weight.shape[0];
  const kin = weight.numel / co;
  if (weight.shape.length < 2) throw new GpuError(`${op}: weight "${weight.name}" must be [Co, C, T, P, P], got [${weight.shape}]`);
  if (pv.shape.length !== 2 || pv.shape[1] !== kin) throw new GpuError(`${op}: pixel_values "${pv.name}" must be [N, ${kin}] to match weight "${weight.name}" [${weight.shape}], got [${pv.shape}]`);
  return weight.view([co, kin]);
}

/** out [N, Co] = pixel_values [N, C·T·P·P] · weight.reshape(Co, C·T·P·P)ᵀ; weight f32 or bf16. */
export function patchEmbed(pixelValues: Tensor, weight: Tensor, opts: { name?: string } = {}): Tensor {
  const w = flatWeight(weight, pixelValues, 'patchEmbed');
  return matmul(pixelValues, w, { name: opts.name ?? 'patch_embed.out' });
}

/**
 * Backward. dweight (shaped like weight, f32; with accumulate, added into opts.dweight) when
 * needDweight (default true: the weight trains only in full fine-tuning), dpixel_values when
 * needDpixel (default true; nothing upstream of the pixels needs it in training).
 */
export function patchEmbedBackward(
  dy: Tensor, pixelValues: Tensor, weight: Tensor,
  opts: { dweight?: Tensor; accumulate?: boolean; needDweight?: boolean; needDpixel?: boolean } = {},
): { dweight?: Tensor; dpixelValues?: Tensor } {
  const w = flatWeight(weight, pixelValues, 'patchEmbedBackward');
  const [co] = w.shape;
  if (dy.shape.length !== 2 || dy.shape[0] !== pixelValues.shape[0] || dy.shape[1] !== co) throw new GpuError(`patchEmbedBackward: dy "${dy.name}" must be [${pixelValues.shape[0]}, ${co}], got [${dy.shape}]`);
  let dweight: Tensor | undefined;
  if (opts.needDweight !== false) {
    const out = opts.dweight?.view(w.shape);
    dweight = matmulBackwardWeight(dy, pixelValues, { out, accumulate: opts.accumulate, name: 'patch_embed.dweight' }).view(weight.shape);
  }
  const dpixelValues = opts.needDpixel === false ? undefined : matmulBackwardInput(dy, w, { name: 'patch_embed.dpixel_values' });
  return { dweight, dpixelValues };
}
