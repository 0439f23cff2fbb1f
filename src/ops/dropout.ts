// LoRA dropout (shaders/dropout.wgsl): the mask is a hash of (seed, stream, element index), so it
// is never stored; the backward applies the same mask to the gradient by passing the same seed.
import code from '../../shaders/dropout.wgsl?raw';
import { dispatch, grid, kernel } from '../gpu/kernel.ts';
import { empty, type Tensor } from '../gpu/tensor.ts';
import { dropoutScale, dropoutThreshold } from './dropoutMask.ts';

export interface DropoutSpec {
  /** drop probability in [0, 1) */
  p: number;
  /** per forward pass */
  seed: number;
  /** per module (dropoutStream(name)) */
  stream: number;
}

const apply = kernel('dropout.wgsl', code, 'apply');
const applyAdd = kernel('dropout.wgsl', code, 'apply_add');

function params(d: DropoutSpec, n: number): [number[], string] {
  return [[n, d.seed >>> 0, d.stream >>> 0, dropoutThreshold(d.p), dropoutScale(d.p)], 'uuuuf'];
}

/** x · mask / (1 − p) in a new tensor (x's shape). */
export function dropout(x: Tensor, d: DropoutSpec): Tensor {
  if (x.dtype !== 'f32') throw new Error(`dropout: x "${x.name}" must be f32, got ${x.dtype}`);
  const out = empty(x.shape, 'f32', `${x.name}.dropped`);
  const [pv, fmt] = params(d, x.numel);
  if (x.numel) dispatch(apply, [x, out], grid(Math.ceil(x.numel / 256)), pv, fmt);
  return out;
}

/** acc += g · mask / (1 − p): the backward of dropout added into an existing gradient. */
export function dropoutBackwardAdd(g: Tensor, d: DropoutSpec, acc: Tensor): void {
  if (g.dtype !== 'f32' || acc.dtype !== 'f32') throw new Error(`dropoutBackwardAdd: "${g.name}" and "${acc.name}" must be f32`);
  if (g.numel !== acc.numel) throw new Error(`dropoutBackwardAdd: "${g.name}" [${g.shape}] and "${acc.name}" [${acc.shape}] differ in size`);
  if (g.buffer === acc.buffer) throw new Error(`dropoutBackwardAdd: "${g.name}" and "${acc.name}" share a buffer`);
  const [pv, fmt] = params(d, g.numel);
  if (g.numel) dispatch(applyAdd, [g, undefined, acc], grid(Math.ceil(g.numel / 256)), pv, fmt);
}
