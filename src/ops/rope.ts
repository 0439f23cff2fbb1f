// Rotary embeddings (shaders/rope.wgsl): 3-D M-RoPE for the text decoder and the 2-D vision
// rotary, both in transformers' rotate-half convention. Tables are built on the CPU in f64
// (src/ops/cpu/rope.ts) and uploaded once per sequence as half tables cos/sin [rows, D/2]; every
// layer, q and k, reuse them.
import code from '../../shaders/rope.wgsl?raw';
import { dispatch, grid, kernel } from '../gpu/kernel.ts';
import { empty, fromData, type Tensor } from '../gpu/tensor.ts';
import { mropeCosSin, visionCosSin, type CosSin } from './ropeTables.ts';

const fwd = kernel('rope.wgsl', code, 'forward');
const bwd = kernel('rope.wgsl', code, 'backward');

/** cos/sin half tables, each [rows, D/2] f32 (HF's cos/sin [rows, D] is concat(t, t)). */
export interface RopeTables { cos: Tensor; sin: Tensor }

export function uploadRopeTables(cs: CosSin, rows: number, name = 'rope'): RopeTables {
  const half = cs.cos.length / Math.max(rows, 1);
  return { cos: fromData(cs.cos, [rows, half], 'f32', `${name}.cos`), sin: fromData(cs.sin, [rows, half], 'f32', `${name}.sin`) };
}

/** Text M-RoPE tables from position_ids [3, L] (rows t, h, w), mrope_section [s0, s1, s2] (Σ = D/2). */
export function mropeTables(positionIds: ArrayLike<number>, seqLen: number, mropeSection: readonly number[], theta: number, headDim: number): RopeTables {
  return uploadRopeTables(mropeCosSin(positionIds, seqLen, mropeSection, theta, headDim), seqLen, 'mrope');
}

/**
 * Vision rotary tables from patch (row, col) positions [N, 2] (visionPatchPos in cpu/rope.ts, in
 * whatever row order the tower uses: pass them already in window order to skip a GPU gather).
 */
export function visionRopeTables(patchPos: ArrayLike<number>, headDim: number, theta = 10000): RopeTables {
  return uploadRopeTables(visionCosSin(patchPos, headDim, theta), patchPos.length / 2, 'vision_rope');
}

/**
 * Where the heads live. Defaults: x is [rows, heads, D] contiguous; a new contiguous output.
 * With offset/rowStride, x can be a fused buffer, e.g. q of qkv [N, 3·heads·D]: offset 0,
 * rowStride 3·heads·D; k: offset heads·D. `out` (+ outOffset/outRowStride) writes into an
 * existing tensor instead (e.g. dq/dk into dqkv); it must not be x itself.
 */
export interface RopeLayout {
  heads?: number;
  offset?: number;
  rowStride?: number;
  out?: Tensor;
  outOffset?: number;
  outRowStride?: number;
}

function run(what: string, k: typeof fwd, x: Tensor, t: RopeTables, l: RopeLayout): Tensor {
  const [rows, half] = t.cos.shape;
  if (t.cos.shape.length !== 2 || t.sin.shape.length !== 2 || t.sin.shape[0] !== rows || t.sin.shape[1] !== half)
    throw new Error(`${what}: cos "${t.cos.name}" [${t.cos.shape}] and sin "${t.sin.name}" [${t.sin.shape}] must both be [rows, D/2]`);
  if (x.dtype !== 'f32') throw new Error(`${what}: "${x.name}" must be f32, got ${x.dtype}`);
  const D = 2 * half;
  const heads = l.heads ?? (x.shape.length === 3 ? x.shape[1] : x.numel / Math.max(rows, 1) / D);
  if (x.shape.length === 3 && l.heads === undefined && x.shape[2] !== D) throw new Error(`${what}: "${x.name}" [${x.shape}] has head dim ${x.shape[2]}, tables have D = ${D}`);
  if (!Number.isInteger(heads) || heads < 1) throw new Error(`${what}: cannot split "${x.name}" [${x.shape}] into ${rows} rows of heads × ${D}`);
  const offset = l.offset ?? 0, rowStride = l.rowStride ?? x.numel / Math.max(rows, 1);
  if (rows && offset + (rows - 1) * rowStride + heads * D > x.numel)
    throw new Error(`${what}: ${rows} rows × ${heads} heads × ${D} at offset ${offset}, row stride ${rowStride} overrun "${x.name}" [${x.shape}]`);
  const out = l.out ?? empty([rows, heads, D], 'f32', `${x.name}.rope`);
  if (out.buffer === x.buffer) throw new Error(`${what}: out "${out.name}" must not share a buffer with "${x.name}"`);
  const outOffset = l.outOffset ?? 0, outRowStride = l.outRowStride ?? (l.out ? out.numel / Math.max(rows, 1) : heads * D);
  if (rows && outOffset + (rows - 1) * outRowStride + heads * D > out.numel)
    throw new Error(`${what}: output at offset ${outOffset}, row stride ${outRowStride} overruns "${out.name}" [${out.shape}]`);
  const n = rows * heads * half;
  if (n) dispatch(k, [x, t.cos, t.sin, out], grid(Math.ceil(n / 64)), [rows, heads, half, offset, rowStride, outOffset, outRowStride]);
  return out;
}

/** out = x·cos + rotate_half(x)·sin per head. */
export function ropeApply(x: Tensor, t: RopeTables, layout: RopeLayout = {}): Tensor {
  return run('ropeApply', fwd, x, t, layout);
}

/** dx = dy·cos + rotate_halfᵀ(dy)·sin (the transpose of ropeApply). */
export function ropeBackward(dy: Tensor, t: RopeTables, layout: RopeLayout = {}): Tensor {
  return run('ropeBackward', bwd, dy, t, layout);
}
