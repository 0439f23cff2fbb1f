// RMSNorm forward/backward (shaders/rmsnorm.wgsl). x [..., D] f32; weight [D] f32 or packed bf16.
import code from '../../shaders/rmsnorm.wgsl?raw';
import { dispatch, grid, kernel } from '../gpu/kernel.ts';
import { empty, numel, type Tensor } from '../gpu/tensor.ts';

const k = (entry: string, bf16: boolean) => kernel('rmsnorm.wgsl', code, entry, { W_BF16: bf16 ? 1 : 0 });

function dims(x: Tensor, weight: Tensor, what: string): { rows: number; dim: number } {
  const dim = x.shape[x.shape.length - 1];
  if (x.dtype !== 'f32') throw new Error(`${what}: x "${x.name}" must be f32, got ${x.dtype}`);
  if (weight.dtype !== 'f32' && weight.dtype !== 'bf16') throw new Error(`${what}: weight "${weight.name}" must be f32 or bf16, got ${weight.dtype}`);
  if (weight.numel !== dim) throw new Error(`${what}: weight "${weight.name}" [${weight.shape}] does not match the last dim ${dim} of x "${x.name}" [${x.shape}]`);
  return { rows: numel(x.shape) / dim, dim };
}

export interface RmsNormOut {
  y: Tensor;
  /** per-row 1/sqrt(mean(x²)+eps) [rows], kept for the backward */
  rstd: Tensor;
}

/** y = w · x / sqrt(mean(x²) + eps) over the last dim. */
export function rmsnorm(x: Tensor, weight: Tensor, eps: number): RmsNormOut {
  const { rows, dim } = dims(x, weight, 'rmsnorm');
  const y = empty(x.shape, 'f32', 'rmsnorm.y');
  const rstd = empty([rows], 'f32', 'rmsnorm.rstd');
  if (rows) dispatch(k('forward', weight.dtype === 'bf16'), [x, weight, y, rstd], grid(rows), [rows, dim, eps], 'uuf');
  return { y, rstd };
}

/**
 * dx (and dweight, summed over rows, only when asked: a frozen weight needs none) from dy, the
 * forward's input x and its rstd.
 */
export function rmsnormBackward(dy: Tensor, x: Tensor, weight: Tensor, rstd: Tensor, opts: { dweight?: boolean } = {}): { dx: Tensor; dweight?: Tensor } {
  const { rows, dim } = dims(x, weight, 'rmsnormBackward');
  if (dy.numel !== x.numel) throw new Error(`rmsnormBackward: dy "${dy.name}" [${dy.shape}] does not match x "${x.name}" [${x.shape}]`);
  if (rstd.numel !== rows) throw new Error(`rmsnormBackward: rstd "${rstd.name}" [${rstd.shape}] should have ${rows} rows`);
  const bf16 = weight.dtype === 'bf16';
  const dx = empty(x.shape, 'f32', 'rmsnorm.dx');
  if (rows) dispatch(k('backward_dx', bf16), [x, weight, undefined, undefined, dy, rstd, dx], grid(rows), [rows, dim, 0], 'uuf');
  if (!opts.dweight) return { dx };
  const dweight = empty([dim], 'f32', 'rmsnorm.dweight');
  dispatch(k('backward_dw', bf16), [x, undefined, undefined, undefined, dy, rstd, undefined, dweight], Math.ceil(dim / 64), [rows, dim, 0], 'uuf');
  return { dx, dweight };
}
