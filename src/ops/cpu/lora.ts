// Reference LoRA linear (f64 accumulation): y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ and its backward.
import { gemmCpu } from './matmul.ts';

export interface LoraCpu { w: Float32Array; bias?: Float32Array; a: Float32Array; b: Float32Array; scaling: number; inF: number; outF: number; r: number }

export function loraLinearCpu(x: Float32Array, T: number, l: LoraCpu): { y: Float32Array; xa: Float32Array } {
  const { w, bias, a, b, scaling, inF, outF, r } = l;
  const xa = gemmCpu(x, a, T, r, inF, { transB: true });
  const base = gemmCpu(x, w, T, outF, inF, { transB: true, bias });
  const y = gemmCpu(xa, b, T, outF, r, { transB: true, alpha: scaling, c: base });
  return { y, xa };
}

export function loraLinearBackwardCpu(dy: Float32Array, x: Float32Array, T: number, l: LoraCpu): { dx: Float32Array; dA: Float32Array; dB: Float32Array } {
  const { w, a, b, scaling: s, inF, outF, r } = l;
  const xa = gemmCpu(x, a, T, r, inF, { transB: true });
  const g = gemmCpu(dy, b, T, r, outF); // dy·B [T, r]
  const dxBase = gemmCpu(dy, w, T, inF, outF);
  const dx = gemmCpu(g, a, T, inF, r, { alpha: s, c: dxBase });
  const dA = gemmCpu(g, x, r, inF, T, { transA: true, alpha: s });
  const dB = gemmCpu(dy, xa, outF, r, T, { transA: true, alpha: s });
  return { dx, dA, dB };
}
