// LoRA linear: y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ, W frozen (f32 or bf16), A [r,in], B [out,r] f32,
// s = alpha/r (or alpha/√r for rsLoRA: the caller passes `scaling`). Built from matmul calls:
// the rank-r products are tiny, and alpha/beta in the GEMM fold the scaling and the sums in.
// The forward returns xa = x·Aᵀ [T, r] for the backward (it is needed for dB).
import { GpuError } from '../gpu/device.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { gemm, matmul, matmulBackwardInput, matmulBackwardWeight } from './matmul.ts';

export interface LoraWeights {
  /** frozen base weight [out, in], f32 or bf16 */
  weight: Tensor;
  /** [out] f32, optional */
  bias?: Tensor;
  /** lora_A [r, in] f32 */
  loraA: Tensor;
  /** lora_B [out, r] f32 */
  loraB: Tensor;
  /** alpha / r, or alpha / √r with rsLoRA */
  scaling: number;
}

function check(x: Tensor, l: LoraWeights, op: string): { T: number; inF: number; outF: number; r: number } {
  const { weight: w, loraA: a, loraB: b } = l;
  if (w.shape.length !== 2) throw new GpuError(`${op}: weight "${w.name}" must be [out, in], got [${w.shape}]`);
  const [outF, inF] = w.shape;
  if (a.shape.length !== 2 || a.shape[1] !== inF) throw new GpuError(`${op}: lora_A "${a.name}" must be [r, ${inF}], got [${a.shape}]`);
  const r = a.shape[0];
  if (b.shape.length !== 2 || b.shape[0] !== outF || b.shape[1] !== r) throw new GpuError(`${op}: lora_B "${b.name}" must be [${outF}, ${r}], got [${b.shape}]`);
  if (a.dtype !== 'f32' || b.dtype !== 'f32') throw new GpuError(`${op}: lora_A "${a.name}" and lora_B "${b.name}" must be f32, got ${a.dtype}, ${b.dtype}`);
  if (x.shape[x.shape.length - 1] !== inF) throw new GpuError(`${op}: x "${x.name}" [${x.shape}] must end in ${inF} (weight "${w.name}" [${w.shape}])`);
  return { T: x.numel / inF, inF, outF, r };
}

/**
 * Forward. x [..., in] → y [..., out] and xa = x·Aᵀ [T, r] (keep it for the backward).
 * `enabled: false` skips the adapter (the reference policy of DPO/GRPO/PPO) and returns no xa.
 */
export function loraLinear(x: Tensor, l: LoraWeights, opts: { enabled?: boolean; name?: string } = {}): { y: Tensor; xa?: Tensor } {
  const { T, inF, r } = check(x, l, 'loraLinear');
  const name = opts.name ?? l.weight.name;
  const y = matmul(x, l.weight, { bias: l.bias, name: `${name}.y` });
  if (opts.enabled === false || r === 0) return { y };
  const x2 = x.view([T, inF]);
  const xa = gemm(x2, l.loraA, { transB: true, name: `${name}.xa` }); // [T, r]
  gemm(xa, l.loraB, { transB: true, alpha: l.scaling, accumulate: true, out: y.view([T, l.weight.shape[0]]) });
  return { y, xa };
}

export interface LoraGrads {
  /** dx [..., in] (absent when needDx is false) */
  dx?: Tensor;
  /** dlora_A [r, in] */
  dA: Tensor;
  /** dlora_B [out, r] */
  dB: Tensor;
}

/**
 * Backward: dx = dy·W + s·(dy·B)·A, dA = s·(dy·B)ᵀ·x, dB = s·dyᵀ·xa.
 * With `accumulate`, dA / dB are added into `opts.dA` / `opts.dB` (gradient accumulation);
 * otherwise they are written there, or into new tensors.
 */
export function loraLinearBackward(
  dy: Tensor, x: Tensor, xa: Tensor, l: LoraWeights,
  opts: { dA?: Tensor; dB?: Tensor; accumulate?: boolean; needDx?: boolean; name?: string } = {},
): LoraGrads {
  const { T, inF, outF, r } = check(x, l, 'loraLinearBackward');
  const name = opts.name ?? l.weight.name;
  if (dy.numel !== T * outF) throw new GpuError(`loraLinearBackward: dy "${dy.name}" [${dy.shape}] must have ${T}×${outF} elements`);
  if (xa.numel !== T * r) throw new GpuError(`loraLinearBackward: xa "${xa.name}" [${xa.shape}] must be [${T}, ${r}]`);
  const dy2 = dy.view([T, outF]), x2 = x.view([T, inF]), xa2 = xa.view([T, r]);
  const acc = opts.accumulate ?? false;
  if (acc && (!opts.dA || !opts.dB)) throw new GpuError('loraLinearBackward: accumulate needs dA and dB tensors');
  const g = gemm(dy2, l.loraB, { name: `${name}.dyB` }); // [T, r]
  const dB = matmulBackwardWeight(dy2, xa2, { out: opts.dB, accumulate: acc, alpha: l.scaling, name: `${name}.dlora_B` });
  const dA = matmulBackwardWeight(g, x2, { out: opts.dA, accumulate: acc, alpha: l.scaling, name: `${name}.dlora_A` });
  let dx: Tensor | undefined;
  if (opts.needDx !== false) {
    dx = matmulBackwardInput(dy, l.weight, { name: `${name}.dx` });
    gemm(g, l.loraA, { alpha: l.scaling, accumulate: true, out: dx.view([T, inF]) });
  }
  g.release(); // recorded reads come before any later reuse of the buffer
  return { dx, dA, dB };
}
