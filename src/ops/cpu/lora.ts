// Reference LoRA linear (f64 accumulation): y = x·Wᵀ + b + s·(xd·Aᵀ)·Bᵀ and its backward, where
// xd = dropout(x) (the same hash mask as the GPU; ./dropout.ts) or x without dropout.
import { gemmCpu } from './matmul.ts';
import { dropoutCpu } from './dropout.ts';

export interface LoraCpu { w: Float32Array; bias?: Float32Array; a: Float32Array; b: Float32Array; scaling: number; inF: number; outF: number; r: number }
export interface DropoutCpu { p: number; seed: number; stream: number }

const dropped = (x: Float32Array, d?: DropoutCpu) => (d && d.p > 0 ? dropoutCpu(x, d.p, d.seed, d.stream) : x);

export function loraLinearCpu(x: Float32Array, T: number, l: LoraCpu, dropout?: DropoutCpu): { y: Float32Array; xa: Float32Array } {
  const { w, bias, a, b, scaling, inF, outF, r } = l;
  const xa = gemmCpu(dropped(x, dropout), a, T, r, inF, { transB: true });
  const base = gemmCpu(x, w, T, outF, inF, { transB: true, bias });
  const y = gemmCpu(xa, b, T, outF, r, { transB: true, alpha: scaling, c: base });
  return { y, xa };
}

export function loraLinearBackwardCpu(dy: Float32Array, x: Float32Array, T: number, l: LoraCpu, dropout?: DropoutCpu): { dx: Float32Array; dA: Float32Array; dB: Float32Array } {
  const { w, a, b, scaling: s, inF, outF, r } = l;
  const xd = dropped(x, dropout);
  const xa = gemmCpu(xd, a, T, r, inF, { transB: true });
  const g = gemmCpu(dy, b, T, r, outF); // dy·B [T, r]
  const dxBase = gemmCpu(dy, w, T, inF, outF);
  const dxBranch = dropped(gemmCpu(g, a, T, inF, r, { alpha: s }), dropout);
  const dx = dxBase.map((v, i) => v + dxBranch[i]);
  const dA = gemmCpu(g, xd, r, inF, T, { transA: true, alpha: s });
  const dB = gemmCpu(dy, xa, outF, r, T, { transA: true, alpha: s });
  return { dx, dA, dB };
}
