// Fused lm_head + log-softmax gather (shaders/lm_head.wgsl): log p(target) of every row of
// x [T, H] under logits = scale · x·Wᵀ, with W given as vocabulary row shards (the embedding
// uploads of gpuWeights.ts), and its backward dx = scale · dlogp · (onehot − softmax) · W.
// No [T, V] logits or dlogits tensor exists: the forward keeps per (row, split) partial
// statistics [T, P, 4], the backward recomputes each split's logits and keeps per split a partial
// dx [P, T, H] that one pass sums in order. Memory O(T·P) forward and O(T·H·P) backward, with P
// (the number of vocabulary splits) chosen so that the partial dx stays under 32 MiB, against
// O(T·V) for logits.
//
//   const r = lmHeadLogSoftmax(x, shards, targets, { scale: 1 / temperature });
//   const dx = lmHeadLogSoftmaxBackward(x, shards, targets, r.lse, dlogp, { scale });
//
// A training forward can instead ask for `expected` (H % 4 == 0): the same pass also forms
// E[r] = Σ_v softmax_v · W[v] (flash-attention style with K = V = W: per split, rescaled whenever
// the running max rises), and since dlogp·(onehot − softmax)·W = dlogp·(W[target] − E), the
// backward then reads one W row per scored row and no logits at all:
//
//   const r = lmHeadLogSoftmax(x, shards, targets, { scale, expected: true });
//   const dx = lmHeadLogSoftmaxBackward(x, shards, targets, r.lse, dlogp, { scale, fromExpected: r.expected });
//
// Rows whose target is negative (or == ignoreIndex) get logp 0 and no gradient (argmax and lse
// are still computed: greedy decoding passes dummy targets).
import code from '../../shaders/lm_head.wgsl?raw';
import { dispatch, grid, kernel, type Kernel } from '../gpu/kernel.ts';
import { GpuError } from '../gpu/device.ts';
import { empty, type Tensor } from '../gpu/tensor.ts';

const FILE = 'lm_head.wgsl';
const RB = 16, VB = 64, WG = 64;
const kernels = new Map<string, Kernel>();
function k(entry: string, w?: { bf16: boolean; vec?: boolean }): Kernel {
  const key = `${entry}|${w?.bf16}|${w?.vec}`;
  let kk = kernels.get(key);
  const constants = w ? { BF16: w.bf16 ? 1 : 0, ...(w.vec === undefined ? {} : { VEC: w.vec ? 1 : 0 }) } : undefined;
  if (!kk) kernels.set(key, (kk = kernel(FILE, code, entry, constants)));
  return kk;
}

/** One vocabulary shard of the output projection: rows [v0, v0 + t.shape[0]) of W. */
export interface LmHeadShard {
  /** [Vs, H] f32 or packed bf16 */
  t: Tensor;
  v0: number;
}

export interface LmHeadOptions {
  /** logits = scale · x·Wᵀ (1 / temperature); default 1 */
  scale?: number;
  ignoreIndex?: number;
  /** vocabulary ids per split (rounded up to a multiple of 64); default: see splitFor */
  split?: number;
  /**
   * lmHeadLogSoftmax: also return `expected` [T, H] = Σ_v softmax_v · W[v] (needs H % 4 == 0;
   * ignored otherwise), computed in the same pass; the backward from it needs no logits
   */
  expected?: boolean;
}

export interface LmHeadResult {
  /** [T] log p(target); 0 on ignored rows */
  logp: Tensor;
  /** [T] logsumexp of the scaled logits: keep for the backward */
  lse: Tensor;
  /** [T] i32 first id of the row maximum */
  argmax: Tensor;
  /** [T, H] the softmax-weighted mean of W's rows (opts.expected): dx = scale·dlogp·(W[target] − expected) */
  expected?: Tensor;
}

const u = undefined;
// params: T, H, Vs, v0, split, p0, P, ignore, scale, acc
const FMT = 'uuuuuuuifu';

function check(x: Tensor, shards: LmHeadShard[], targets: Tensor, what: string): { T: number; H: number; V: number } {
  const problems: string[] = [];
  if (x.dtype !== 'f32' || x.shape.length !== 2) problems.push(`x "${x.name}" must be f32 [T, H], got ${x.dtype} [${x.shape}]`);
  const [T, H] = x.shape;
  if (targets.dtype !== 'i32' || targets.numel !== T) problems.push(`targets "${targets.name}" must be i32 [${T}], got ${targets.dtype} [${targets.shape}]`);
  if (!shards.length) problems.push('no vocabulary shards given');
  let next = 0;
  shards.forEach((s, i) => {
    const [vs, h] = s.t.shape;
    if (s.t.shape.length !== 2 || h !== H || !(vs > 0)) problems.push(`shard ${i} "${s.t.name}" must be [rows, ${H}], got [${s.t.shape}]`);
    if (s.t.dtype !== 'f32' && s.t.dtype !== 'bf16') problems.push(`shard ${i} "${s.t.name}" must be f32 or bf16, got ${s.t.dtype}`);
    if (!(Number.isInteger(s.v0) && s.v0 >= next)) problems.push(`shard ${i} "${s.t.name}" starts at id ${s.v0}, before the end of the previous shard (${next}): shards must be in vocabulary order`);
    next = s.v0 + (vs || 0);
  });
  if (problems.length) throw new GpuError(`${what}: ${problems.join('; ')}`);
  return { T, H, V: next };
}

/**
 * Ids per split: the option, else small enough that every shard gives many workgroups (load
 * balance: a split is one workgroup's serial loop) but, in the backward, large enough that the
 * partial dx [P, T, H] stays under PARTIAL_BYTES.
 */
const PARTIAL_BYTES = 32 * 2 ** 20;
function splitFor(V: number, opts: LmHeadOptions, rowBytes = 0): number {
  let want = opts.split ?? 1024;
  if (opts.split === undefined && rowBytes) want = Math.max(want, Math.ceil(V / Math.max(1, Math.floor(PARTIAL_BYTES / rowBytes))));
  if (!(want > 0)) throw new GpuError(`lmHead: split must be positive, got ${opts.split}`);
  return Math.ceil(want / VB) * VB;
}

function plan(shards: LmHeadShard[], split: number): { p0: number[]; P: number } {
  const p0: number[] = [];
  let P = 0;
  for (const s of shards) {
    p0.push(P);
    P += Math.ceil(s.t.shape[0] / split);
  }
  return { p0, P };
}

function bindW(s: LmHeadShard): [GPUBuffer, GPUBuffer, GPUBuffer] {
  // three views of one buffer (scalar words, vec2, vec4): whole buffer, so every view fits
  return [s.t.buffer, s.t.buffer, s.t.buffer];
}

/** log p(targets[r] | x[r]) over every shard, plus logsumexp and argmax, without logits in memory. */
export function lmHeadLogSoftmax(x: Tensor, shards: LmHeadShard[], targets: Tensor, opts: LmHeadOptions = {}): LmHeadResult {
  const { T, H, V } = check(x, shards, targets, 'lmHeadLogSoftmax');
  const scale = opts.scale ?? 1, ignore = opts.ignoreIndex ?? -100;
  const r: LmHeadResult = { logp: empty([T], 'f32', 'lmh.logp'), lse: empty([T], 'f32', 'lmh.lse'), argmax: empty([T], 'i32', 'lmh.argmax') };
  if (!T) return r;
  const vec = H % 4 === 0;
  const withE = !!opts.expected && vec && H > 0;
  // with E the split also bounds the partial E_p [P, T, H], as in the backward
  const split = withE ? splitFor(V, opts, 4 * T * H) : splitFor(V, opts);
  const { p0, P } = plan(shards, split);
  const part = empty([T, P, 4], 'f32', 'lmh.partials');
  const ep = withE ? empty([P, T, H], 'f32', 'lmh.expected.partials') : undefined;
  shards.forEach((s, i) => {
    const vs = s.t.shape[0];
    const b = [x, x.buffer, ...bindW(s), targets, part];
    if (ep) dispatch(k('lmh_fwd_e', { bf16: s.t.dtype === 'bf16', vec }), [...b, u, u, u, u, u, u, u, u, u, u, ep], [Math.ceil(vs / split), Math.ceil(T / RB)], [T, H, vs, s.v0, split, p0[i], P, ignore, scale, 0], FMT);
    else dispatch(k('lmh_fwd', { bf16: s.t.dtype === 'bf16', vec }), b, [Math.ceil(vs / split), Math.ceil(T / RB)], [T, H, vs, s.v0, split, p0[i], P, ignore, scale, 0], FMT);
  });
  dispatch(k('lmh_combine'), [u, u, u, u, u, targets, u, part, r.logp, r.lse, r.argmax], grid(Math.ceil(T / WG)), [T, H, 0, 0, split, 0, P, ignore, scale, 0], FMT);
  if (ep) {
    r.expected = empty([T, H], 'f32', 'lmh.expected');
    dispatch(k('lmh_expect'), [u, u, u, u, u, u, u, part, u, u, u, u, u, u, ep, r.expected], grid(Math.ceil((T * H) / WG)), [T, H, 0, 0, split, 0, P, ignore, scale, 0], FMT);
    ep.release();
  }
  part.release();
  return r;
}

export interface LmHeadBackwardOptions extends LmHeadOptions {
  /** write (or with accumulate, add) dx here: f32 [T, H] */
  out?: Tensor;
  accumulate?: boolean;
  /** the forward's `expected` [T, H]: dx without recomputing any logits */
  fromExpected?: Tensor;
}

/**
 * dx [T, H] = scale · dlogp[r] · (onehot(target) − softmax(scale · x·Wᵀ)) · W from the forward's
 * lse; rows with dlogp 0 or an ignored target skip the recomputation.
 */
export function lmHeadLogSoftmaxBackward(x: Tensor, shards: LmHeadShard[], targets: Tensor, lse: Tensor, dlogp: Tensor, opts: LmHeadBackwardOptions = {}): Tensor {
  const { T, H, V } = check(x, shards, targets, 'lmHeadLogSoftmaxBackward');
  if (lse.numel !== T || dlogp.numel !== T || lse.dtype !== 'f32' || dlogp.dtype !== 'f32') throw new GpuError(`lmHeadLogSoftmaxBackward: lse "${lse.name}" [${lse.shape}] and dlogp "${dlogp.name}" [${dlogp.shape}] must be f32 [${T}]`);
  const out = opts.out ?? (opts.accumulate ? undefined : empty([T, H], 'f32', 'lmh.dx'));
  if (!out || out.numel !== T * H || out.dtype !== 'f32') throw new GpuError(`lmHeadLogSoftmaxBackward: out must be f32 [${T}, ${H}]${out ? `, got ${out.dtype} [${out.shape}]` : ' (accumulate needs out)'}`);
  if (!T || !H) return out;
  const scale = opts.scale ?? 1, ignore = opts.ignoreIndex ?? -100;
  const E = opts.fromExpected;
  if (E) {
    if (E.numel !== T * H || E.dtype !== 'f32') throw new GpuError(`lmHeadLogSoftmaxBackward: fromExpected "${E.name}" must be f32 [${T}, ${H}], got ${E.dtype} [${E.shape}]`);
    const g = grid(Math.ceil((T * H) / WG));
    const prm = (s?: LmHeadShard) => [T, H, s ? s.t.shape[0] : 0, s ? s.v0 : 0, 0, 0, 0, ignore, scale, opts.accumulate ? 1 : 0];
    dispatch(k('lmh_dx_e'), [u, u, u, u, u, targets, u, u, u, u, u, u, dlogp, u, u, out, E], g, prm(), FMT);
    for (const s of shards) dispatch(k('lmh_dx_w', { bf16: s.t.dtype === 'bf16' }), [u, u, s.t.buffer, u, u, targets, u, u, u, u, u, u, dlogp, u, u, out], g, prm(s), FMT);
    return out;
  }
  const split = splitFor(V, opts, 4 * T * H);
  const { p0, P } = plan(shards, split);
  const dxp = empty([P, T, H], 'f32', 'lmh.dx.partials');
  const vec = H % 4 === 0;
  shards.forEach((s, i) => {
    const vs = s.t.shape[0];
    dispatch(k('lmh_bwd', { bf16: s.t.dtype === 'bf16', vec }), [x, x.buffer, ...bindW(s), targets, u, u, u, u, u, lse, dlogp, dxp], [Math.ceil(vs / split), Math.ceil(T / RB)],
      [T, H, vs, s.v0, split, p0[i], P, ignore, scale, 0], FMT);
  });
  dispatch(k('lmh_reduce'), [u, u, u, u, u, u, u, u, u, u, u, u, u, u, dxp, out], grid(Math.ceil((T * H) / WG)), [T, H, 0, 0, split, 0, P, ignore, scale, opts.accumulate ? 1 : 0], FMT);
  dxp.release();
  return out;
}
