// LoRA linear: y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ, W frozen (f32, bf16 or NF4: QLoRA), A [r,in], B [out,r] f32,
// s = alpha/r (or alpha/√r for rsLoRA: the caller passes `scaling`). Built from matmul calls:
// the rank-r products are tiny, and alpha/beta in the GEMM fold the scaling and the sums in.
// The forward returns xa = x·Aᵀ [T, r] for the backward (it is needed for dB).
//
// Dropout (peft's lora_dropout, training only): the branch reads dropout(x) instead of x,
// y = x·Wᵀ + b + s·(dropout(x)·Aᵀ)·Bᵀ. The mask is a hash of (seed, stream, index)
// (ops/dropout.ts), so the backward rebuilds dropout(x) for dA from x and the same spec, and
// passes the branch's dx through the same mask.
//
// loraLinearParts: a linear whose frozen weight is kept as row blocks (the vision qkv is uploaded
// as q, k, v) but whose LoRA is one module over the fused output (lora_B [3C, r] as peft has it).
import { GpuError } from '../gpu/device.ts';
import { encoder } from '../gpu/kernel.ts';
import { empty, type Tensor } from '../gpu/tensor.ts';
import { dropout, dropoutBackwardAdd, type DropoutSpec } from './dropout.ts';
import { gemm, matmulBackwardWeight } from './matmul.ts';
import { matmulW, matmulWBackwardInput } from './matmulNf4.ts';

export type { DropoutSpec } from './dropout.ts';

/** The input the LoRA branch reads: x, or dropout(x) in a new tensor (owned by the caller when `fresh`). */
function branchInput(x: Tensor, d: DropoutSpec | undefined): { xd: Tensor; fresh: boolean } {
  return d && d.p > 0 ? { xd: dropout(x, d), fresh: true } : { xd: x, fresh: false };
}

export interface LoraWeights {
  /** frozen base weight [out, in], f32, bf16 or NF4 (an Nf4Tensor) */
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
export function loraLinear(x: Tensor, l: LoraWeights, opts: { enabled?: boolean; name?: string; dropout?: DropoutSpec } = {}): { y: Tensor; xa?: Tensor } {
  const { T, inF, r } = check(x, l, 'loraLinear');
  const name = opts.name ?? l.weight.name;
  const y = matmulW(x, l.weight, { bias: l.bias, name: `${name}.y` });
  if (opts.enabled === false || r === 0) return { y };
  const { xd, fresh } = branchInput(x, opts.dropout);
  const xa = gemm(xd.view([T, inF]), l.loraA, { transB: true, name: `${name}.xa` }); // [T, r]
  if (fresh) xd.release();
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

export interface LoraBackwardOptions {
  dA?: Tensor;
  dB?: Tensor;
  accumulate?: boolean;
  needDx?: boolean;
  name?: string;
  /** the forward's dropout (same seed and stream): the mask is redrawn, never stored */
  dropout?: DropoutSpec;
}

/** dA = s·gᵀ·dropout(x) and dx += dropoutᵀ(s·g·A), g = dy·B [T, r]; shared by both backwards. */
function branchBackward(g: Tensor, x: Tensor, l: { loraA: Tensor; scaling: number }, T: number, inF: number, dx: Tensor | undefined, opts: LoraBackwardOptions, acc: boolean, name: string): Tensor {
  const { xd, fresh } = branchInput(x, opts.dropout);
  const dA = matmulBackwardWeight(g, xd.view([T, inF]), { out: opts.dA, accumulate: acc, alpha: l.scaling, name: `${name}.dlora_A` });
  if (fresh) xd.release();
  if (dx) {
    if (opts.dropout && opts.dropout.p > 0) {
      const gx = gemm(g, l.loraA, { alpha: l.scaling, name: `${name}.dx_lora` }); // [T, in]
      dropoutBackwardAdd(gx, opts.dropout, dx);
      gx.release();
    } else gemm(g, l.loraA, { alpha: l.scaling, accumulate: true, out: dx.view([T, inF]) });
  }
  return dA;
}

/**
 * Backward: dx = dy·W + s·(dy·B)·A, dA = s·(dy·B)ᵀ·x, dB = s·dyᵀ·xa (with dropout, x is
 * dropout(x) in dA and the branch's share of dx goes back through the mask).
 * With `accumulate`, dA / dB are added into `opts.dA` / `opts.dB` (gradient accumulation);
 * otherwise they are written there, or into new tensors.
 */
export function loraLinearBackward(dy: Tensor, x: Tensor, xa: Tensor, l: LoraWeights, opts: LoraBackwardOptions = {}): LoraGrads {
  const { T, inF, outF, r } = check(x, l, 'loraLinearBackward');
  const name = opts.name ?? l.weight.name;
  if (dy.numel !== T * outF) throw new GpuError(`loraLinearBackward: dy "${dy.name}" [${dy.shape}] must have ${T}×${outF} elements`);
  if (xa.numel !== T * r) throw new GpuError(`loraLinearBackward: xa "${xa.name}" [${xa.shape}] must be [${T}, ${r}]`);
  const dy2 = dy.view([T, outF]), x2 = x.view([T, inF]), xa2 = xa.view([T, r]);
  const acc = opts.accumulate ?? false;
  if (acc && (!opts.dA || !opts.dB)) throw new GpuError('loraLinearBackward: accumulate needs dA and dB tensors');
  const g = gemm(dy2, l.loraB, { name: `${name}.dyB` }); // [T, r]
  const dB = matmulBackwardWeight(dy2, xa2, { out: opts.dB, accumulate: acc, alpha: l.scaling, name: `${name}.dlora_B` });
  const dx = opts.needDx !== false ? matmulWBackwardInput(dy, l.weight, { name: `${name}.dx` }) : undefined;
  const dA = branchBackward(g, x2, l, T, inF, dx, opts, acc, name);
  g.release(); // recorded reads come before any later reuse of the buffer
  return { dx, dA, dB };
}

// ---- row-block weights (vision qkv) -----------------------------------------------------------

export interface LoraPartsWeights {
  /** the frozen weight as row blocks [out_j, in] (f32 or bf16), with optional biases [out_j] */
  parts: { weight: Tensor; bias?: Tensor }[];
  /** lora_A [r, in], lora_B [Σ out_j, r] f32 */
  loraA: Tensor;
  loraB: Tensor;
  scaling: number;
}

function checkParts(x: Tensor, l: LoraPartsWeights, op: string): { T: number; inF: number; r: number; outs: number[] } {
  if (!l.parts.length) throw new GpuError(`${op}: no weight parts`);
  const outs = l.parts.map((p) => p.weight.shape[0]);
  const outF = outs.reduce((a, b) => a + b, 0);
  const inF = l.parts[0].weight.shape[1];
  for (const p of l.parts) {
    if (p.weight.shape.length !== 2 || p.weight.shape[1] !== inF) throw new GpuError(`${op}: weight part "${p.weight.name}" [${p.weight.shape}] must be [out, ${inF}]`);
  }
  const [r] = l.loraA.shape;
  check(x, { weight: { shape: [outF, inF], name: l.parts.map((p) => p.weight.name).join('+') } as Tensor, loraA: l.loraA, loraB: l.loraB, scaling: l.scaling }, op);
  return { T: x.numel / inF, inF, r, outs };
}

/** Rows [row0, row0 + rows) of an f32 [*, r] tensor, copied into a new [rows, r] tensor. */
function rowBlock(t: Tensor, row0: number, rows: number, r: number, name: string): Tensor {
  const out = empty([rows, r], 'f32', name);
  if (rows * r) encoder().copyBufferToBuffer(t.buffer, row0 * r * 4, out.buffer, 0, rows * r * 4);
  return out;
}

/**
 * Forward of a row-split linear with one LoRA over the fused output: y_j = x·W_jᵀ + b_j +
 * s·(dropout(x)·Aᵀ)·B_jᵀ, B_j = rows of lora_B for part j. Returns every y_j and xa [T, r].
 */
export function loraLinearParts(x: Tensor, l: LoraPartsWeights, opts: { name?: string; dropout?: DropoutSpec } = {}): { ys: Tensor[]; xa: Tensor } {
  const { T, inF, r, outs } = checkParts(x, l, 'loraLinearParts');
  const name = opts.name ?? 'lora_parts';
  const { xd, fresh } = branchInput(x, opts.dropout);
  const xa = gemm(xd.view([T, inF]), l.loraA, { transB: true, name: `${name}.xa` });
  if (fresh) xd.release();
  let row0 = 0;
  const ys = l.parts.map((p, j) => {
    const y = matmulW(x, p.weight, { bias: p.bias, name: `${name}.y${j}` });
    const bj = rowBlock(l.loraB, row0, outs[j], r, `${name}.lora_B${j}`);
    gemm(xa, bj, { transB: true, alpha: l.scaling, accumulate: true, out: y.view([T, outs[j]]) });
    bj.release();
    row0 += outs[j];
    return y;
  });
  return { ys, xa };
}

/**
 * Backward of loraLinearParts from dys[j] = dL/dy_j: dx = Σ_j dy_j·W_j + branch, g = Σ_j dy_j·B_j,
 * dB_j = s·dy_jᵀ·xa (rows of dB), dA = s·gᵀ·dropout(x). Needs dA / dB tensors (written or
 * accumulated into, as loraLinearBackward).
 */
export function loraLinearPartsBackward(dys: Tensor[], x: Tensor, xa: Tensor, l: LoraPartsWeights, opts: LoraBackwardOptions & { dA: Tensor; dB: Tensor }): { dx: Tensor; dA: Tensor; dB: Tensor } {
  const { T, inF, r, outs } = checkParts(x, l, 'loraLinearPartsBackward');
  const name = opts.name ?? 'lora_parts';
  if (dys.length !== outs.length) throw new GpuError(`loraLinearPartsBackward: ${dys.length} gradients for ${outs.length} weight parts`);
  dys.forEach((d, j) => { if (d.numel !== T * outs[j]) throw new GpuError(`loraLinearPartsBackward: dy "${d.name}" [${d.shape}] must have ${T}×${outs[j]} elements`); });
  if (xa.numel !== T * r) throw new GpuError(`loraLinearPartsBackward: xa "${xa.name}" [${xa.shape}] must be [${T}, ${r}]`);
  const acc = opts.accumulate ?? false;
  const dx = empty([...x.shape], 'f32', `${name}.dx`);
  const g = empty([T, r], 'f32', `${name}.dyB`);
  let row0 = 0;
  dys.forEach((d, j) => {
    const dy2 = d.view([T, outs[j]]);
    matmulWBackwardInput(dy2, l.parts[j].weight, { out: dx.view([T, inF]), accumulate: j > 0 });
    const bj = rowBlock(l.loraB, row0, outs[j], r, `${name}.lora_B${j}`);
    gemm(dy2, bj, { out: g, accumulate: j > 0 });
    bj.release();
    // dB rows of part j: through a [out_j, r] copy (the GEMM has no output offset)
    const dbj = acc ? rowBlock(opts.dB, row0, outs[j], r, `${name}.dlora_B${j}`) : empty([outs[j], r], 'f32', `${name}.dlora_B${j}`);
    matmulBackwardWeight(dy2, xa.view([T, r]), { out: dbj, accumulate: acc, alpha: l.scaling });
    encoder().copyBufferToBuffer(dbj.buffer, 0, opts.dB.buffer, row0 * r * 4, outs[j] * r * 4);
    dbj.release();
    row0 += outs[j];
  });
  const dA = branchBackward(g, x.view([T, inF]), l, T, inF, dx, opts, acc, name);
  g.release();
  return { dx, dA, dB: opts.dB };
}
