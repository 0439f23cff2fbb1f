// SwiGLU y = silu(gate) · up and its backward (shaders/swiglu.wgsl). All f32, same shape.
import code from '../../shaders/swiglu.wgsl?raw';
import { dispatch, grid, kernel } from '../gpu/kernel.ts';
import { empty, type Tensor } from '../gpu/tensor.ts';

const fwd = kernel('swiglu.wgsl', code, 'forward');
const bwd = kernel('swiglu.wgsl', code, 'backward');

function same(what: string, ...ts: Tensor[]): number {
  for (const t of ts) {
    if (t.dtype !== 'f32') throw new Error(`${what}: "${t.name}" must be f32, got ${t.dtype}`);
    if (t.numel !== ts[0].numel) throw new Error(`${what}: "${t.name}" [${t.shape}] and "${ts[0].name}" [${ts[0].shape}] differ in size`);
  }
  return ts[0].numel;
}

export function swiglu(gate: Tensor, up: Tensor): Tensor {
  const n = same('swiglu', gate, up);
  const y = empty(gate.shape, 'f32', 'swiglu.y');
  if (n) dispatch(fwd, [gate, up, y], grid(Math.ceil(n / 256)), [n]);
  return y;
}

export function swigluBackward(dy: Tensor, gate: Tensor, up: Tensor): { dgate: Tensor; dup: Tensor } {
  const n = same('swigluBackward', gate, up, dy);
  const dgate = empty(gate.shape, 'f32', 'swiglu.dgate');
  const dup = empty(up.shape, 'f32', 'swiglu.dup');
  if (n) dispatch(bwd, [gate, up, undefined, dy, dgate, dup], grid(Math.ceil(n / 256)), [n]);
  return { dgate, dup };
}
