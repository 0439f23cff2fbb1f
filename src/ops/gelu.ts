// Exact (erf) GELU and its backward (shaders/gelu.wgsl), as nn.GELU() in the vision merger.
import code from '../../shaders/gelu.wgsl?raw';
import { dispatch, grid, kernel } from '../gpu/kernel.ts';
import { empty, type Tensor } from '../gpu/tensor.ts';

const fwd = kernel('gelu.wgsl', code, 'forward');
const bwd = kernel('gelu.wgsl', code, 'backward');

export function gelu(x: Tensor): Tensor {
  if (x.dtype !== 'f32') throw new Error(`gelu: x "${x.name}" must be f32, got ${x.dtype}`);
  const y = empty(x.shape, 'f32', 'gelu.y');
  if (x.numel) dispatch(fwd, [x, y], grid(Math.ceil(x.numel / 256)), [x.numel]);
  return y;
}

export function geluBackward(dy: Tensor, x: Tensor): Tensor {
  if (x.dtype !== 'f32' || dy.dtype !== 'f32') throw new Error(`geluBackward: x "${x.name}" and dy "${dy.name}" must be f32`);
  if (dy.numel !== x.numel) throw new Error(`geluBackward: dy "${dy.name}" [${dy.shape}] does not match x "${x.name}" [${x.shape}]`);
  const dx = empty(x.shape, 'f32', 'gelu.dx');
  if (x.numel) dispatch(bwd, [x, undefined, dy, dx], grid(Math.ceil(x.numel / 256)), [x.numel]);
  return dx;
}
