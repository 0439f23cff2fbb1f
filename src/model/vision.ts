// The vision tower on the GPU: forward, and (for LoRA on vision modules) backward by hand.
//
//   pixel_values [N, 3·2·14·14] ─ patch embed (Conv3d = matmul) ─▶ [N, C]
//   reorder into window order (4-row merge groups gathered by window_index); 2-D rotary tables too
//   blocks: x += proj(attn(rope(q), rope(k), v)) inside windows (cu_window_seqlens), or the whole
//           image at fullatt_block_indexes (cu_seqlens); x += down(silu(gate(h)) · up(h))
//   merger: RMSNorm, 4 rows → one, mlp.0 → GELU → mlp.2 ─▶ [M, H] windowed
//   un-permute: image_embeds[window_index[i]] = merged[i]
//
// LoRA (qkv, attn.proj, mlp.gate/up/down_proj, merger.mlp.0/2) goes through the text decoder's
// linear() with the same TextCtx; the qkv weight is uploaded as q, k, v row blocks, so its LoRA (one
// module over the fused [3C] output, as peft) uses loraLinearParts. A forward with `keep` returns
// what visionBackward reads (every block's activations, or only each block's input with
// `recompute`). The backward starts from d image_embeds and stops at the lowest adapted block:
// nothing below it has a gradient to collect (the patch embedding and the pixels are frozen).
import { fromData, readMany, type Tensor } from '../gpu/tensor.ts';
import { add, addInPlace, gatherRows, scatterRows } from '../ops/elementwise.ts';
import { attentionVarlen, attentionVarlenBackward } from '../ops/attention.ts';
import { gelu, geluBackward } from '../ops/gelu.ts';
import { loraLinearParts, loraLinearPartsBackward, type LoraPartsWeights } from '../ops/lora.ts';
import { matmulW, matmulWBackwardInput } from '../ops/matmulNf4.ts';
import { patchEmbed } from '../ops/patchEmbed.ts';
import { rmsnorm, rmsnormBackward } from '../ops/rmsnorm.ts';
import { ropeApply, ropeBackward, visionRopeTables, type RopeTables } from '../ops/rope.ts';
import { visionRopeFreqs } from '../ops/ropeTables.ts';
import { swiglu, swigluBackward } from '../ops/swiglu.ts';
import { empty } from '../gpu/tensor.ts';
import { getWindowIndex } from '../data/windowIndex.ts';
import type { QwenVLConfig } from './config.ts';
import type { GpuWeights } from './gpuWeights.ts';
import { dropoutOf, linear, linearBackward, loraOf, type GpuLoraModule, type TextCtx } from './text.ts';

/** The golden intermediates (vision_forward), read back when asked. */
export interface VisionCapture {
  patchEmbeds: Float32Array;
  ropeFreqs: Float32Array;
  windowIndex: Int32Array;
  cuWindowSeqlens: Int32Array;
  cuSeqlens: Int32Array;
  blockOut: Float32Array[];
  mergerOutWindowed: Float32Array;
}

const VISION_EPS = 1e-6;

export const VISION_PROJ = ['attn.qkv', 'attn.proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'] as const;
export type VisionProj = (typeof VISION_PROJ)[number];

/** What one block's backward reads (its input x is kept by the caller). */
export interface VisionBlockActs {
  rstd1: Tensor; h1: Tensor;
  /** rotated q, k and v [N, heads, hd]; attention output [N, heads, hd] and its logsumexp */
  q: Tensor; k: Tensor; v: Tensor; attn: Tensor; lse: Tensor;
  x2: Tensor; rstd2: Tensor; h2: Tensor;
  gate: Tensor; up: Tensor; act: Tensor;
  /** x·Aᵀ per adapted projection (for dB) */
  xa: Partial<Record<VisionProj, Tensor>>;
}

function releaseBlockActs(a: VisionBlockActs): void {
  for (const t of [a.rstd1, a.h1, a.q, a.k, a.v, a.attn, a.lse, a.x2, a.rstd2, a.h2, a.gate, a.up, a.act, ...Object.values(a.xa)]) t?.release();
}

/** A train forward of the tower, kept for visionBackward. */
export interface VisionSaved {
  N: number;
  M: number;
  widx: Tensor;
  rope: RopeTables;
  cuWin: Segments;
  cuFull: Segments;
  /** input of every block from `lowest` up (undefined below it) */
  inputs: (Tensor | undefined)[];
  /** per block, unless recomputing */
  acts?: (VisionBlockActs | undefined)[];
  /** the lowest block with an adapted module (depth when only the merger is adapted) */
  lowest: number;
  /** merger: its input (the last block's output), ln_q's 1/rms and output, mlp.0 output, GELU output */
  xFinal: Tensor;
  rstdQ: Tensor;
  nq: Tensor;
  z: Tensor;
  zg: Tensor;
  xa0?: Tensor;
  xa2?: Tensor;
}

export function releaseVisionSaved(s: VisionSaved): void {
  for (const t of [s.widx, s.rope.cos, s.rope.sin, s.cuWin.cu, s.cuFull.cu, s.xFinal, s.rstdQ, s.nq, s.z, s.zg, s.xa0, s.xa2, ...s.inputs]) t?.release();
  for (const a of s.acts ?? []) if (a) releaseBlockActs(a);
}

/** The lowest block with an adapted module in this pass (depth when none: only the merger, or nothing). */
export function lowestAdaptedBlock(ctx: TextCtx): number {
  const depth = ctx.cfg.vision.depth;
  if (!ctx.loraOn) return depth;
  for (let b = 0; b < depth; b++) if (VISION_PROJ.some((p) => ctx.lora.has(`visual.blocks.${b}.${p}`))) return b;
  return depth;
}

/** Whether this pass adapts any vision module (then image embeddings depend on the adapter). */
export function visionAdapted(ctx: TextCtx): boolean {
  if (!ctx.loraOn) return false;
  for (const k of ctx.lora.keys()) if (k.startsWith('visual.')) return true;
  return false;
}

function qkvParts(w: GpuWeights, p: string): LoraPartsWeights['parts'] {
  return ['q', 'k', 'v'].map((n) => ({ weight: w.get(`${p}attn.${n}.weight`), bias: w.get(`${p}attn.${n}.bias`) }));
}

function qkvLora(l: GpuLoraModule, parts: LoraPartsWeights['parts']): LoraPartsWeights {
  return { parts, loraA: l.A, loraB: l.B, scaling: l.spec.scaling };
}

/** cu_seqlens on the GPU and the longest segment (flash attention's backward sizes its dS scratch by it) */
export interface Segments { cu: Tensor; maxSeqlen: number }

function segments(cuSeqlens: Int32Array, name: string): Segments {
  let maxSeqlen = 0;
  for (let i = 1; i < cuSeqlens.length; i++) maxSeqlen = Math.max(maxSeqlen, cuSeqlens[i] - cuSeqlens[i - 1]);
  return { cu: fromData(cuSeqlens, [cuSeqlens.length], 'i32', name), maxSeqlen };
}

/** One vision block on x [N, C] (window order); x is left untouched. */
export function visionBlockForward(ctx: TextCtx, b: number, x: Tensor, rope: RopeTables, cu: Segments, keep: boolean): { out: Tensor; acts?: VisionBlockActs } {
  const v = ctx.cfg.vision, N = x.shape[0], C = v.hiddenSize, heads = v.numHeads, hd = v.headDim;
  const p = `visual.blocks.${b}.`, w = ctx.w;
  const n1 = rmsnorm(x, w.get(p + 'norm1.weight'), VISION_EPS);
  const lq = loraOf(ctx, p + 'attn.qkv');
  let q0: Tensor, k0: Tensor, v0: Tensor, xaQkv: Tensor | undefined;
  if (lq) {
    const r = loraLinearParts(n1.y, qkvLora(lq, qkvParts(w, p)), { name: p + 'attn.qkv', dropout: dropoutOf(ctx, lq) });
    [q0, k0, v0] = r.ys;
    if (keep) xaQkv = r.xa;
    else r.xa.release();
  } else {
    [q0, k0, v0] = qkvParts(w, p).map((pt, j) => matmulW(n1.y, pt.weight, { bias: pt.bias, name: `${p}attn.${'qkv'[j]}` }));
  }
  const q = ropeApply(q0.view([N, heads, hd]), rope), k = ropeApply(k0.view([N, heads, hd]), rope);
  q0.release();
  k0.release();
  const vv = v0.view([N, heads, hd]);
  const a = attentionVarlen(q, k, vv, cu.cu, { maxSeqlen: cu.maxSeqlen });
  const attn = a.out.view([N, C]);
  const o = linear(ctx, p + 'attn.proj', attn, keep);
  const x2 = add(x, o.y);
  o.y.release();
  const n2 = rmsnorm(x2, w.get(p + 'norm2.weight'), VISION_EPS);
  const g = linear(ctx, p + 'mlp.gate_proj', n2.y, keep), u = linear(ctx, p + 'mlp.up_proj', n2.y, keep);
  const act = swiglu(g.y, u.y);
  const d = linear(ctx, p + 'mlp.down_proj', act, keep);
  const out = add(x2, d.y);
  d.y.release();
  if (!keep) {
    for (const t of [n1.y, n1.rstd, q, k, vv, a.out, a.lse, x2, n2.y, n2.rstd, g.y, u.y, act]) t.release();
    return { out };
  }
  const xa: VisionBlockActs['xa'] = {};
  if (xaQkv) xa['attn.qkv'] = xaQkv;
  const save = (proj: VisionProj, r: { xa?: Tensor }) => { if (r.xa) xa[proj] = r.xa; };
  save('attn.proj', o); save('mlp.gate_proj', g); save('mlp.up_proj', u); save('mlp.down_proj', d);
  return { out, acts: { rstd1: n1.rstd, h1: n1.y, q, k, v: vv, attn: a.out, lse: a.lse, x2, rstd2: n2.rstd, h2: n2.y, gate: g.y, up: u.y, act, xa } };
}

/** dx of one vision block from dout; accumulates its LoRA gradients. Releases nothing of `a`. */
export function visionBlockBackward(ctx: TextCtx, b: number, x: Tensor, a: VisionBlockActs, dout: Tensor, rope: RopeTables, cu: Segments): Tensor {
  const v = ctx.cfg.vision, N = x.shape[0], C = v.hiddenSize, heads = v.numHeads, hd = v.headDim;
  const p = `visual.blocks.${b}.`, w = ctx.w;
  // MLP
  const dact = linearBackward(ctx, p + 'mlp.down_proj', dout, a.act, a.xa['mlp.down_proj']);
  const { dgate, dup } = swigluBackward(dact, a.gate, a.up);
  dact.release();
  const dh2 = linearBackward(ctx, p + 'mlp.gate_proj', dgate, a.h2, a.xa['mlp.gate_proj']);
  const dh2u = linearBackward(ctx, p + 'mlp.up_proj', dup, a.h2, a.xa['mlp.up_proj']);
  addInPlace(dh2, dh2u);
  for (const t of [dgate, dup, dh2u]) t.release();
  const dx2 = rmsnormBackward(dh2, a.x2, w.get(p + 'norm2.weight'), a.rstd2).dx;
  dh2.release();
  addInPlace(dx2, dout); // residual
  // attention
  const dattn = linearBackward(ctx, p + 'attn.proj', dx2, a.attn.view([N, C]), a.xa['attn.proj']);
  const g = attentionVarlenBackward(a.q, a.k, a.v, a.attn, a.lse, dattn.view([N, heads, hd]), cu.cu, { maxSeqlen: cu.maxSeqlen });
  dattn.release();
  const dq = ropeBackward(g.dq, rope), dk = ropeBackward(g.dk, rope);
  g.dq.release();
  g.dk.release();
  const dys = [dq.view([N, C]), dk.view([N, C]), g.dv.view([N, C])];
  const parts = qkvParts(w, p);
  const lq = loraOf(ctx, p + 'attn.qkv');
  let dh1: Tensor;
  if (lq) {
    const xa = a.xa['attn.qkv'];
    if (!xa) throw new Error(`backward of ${p}attn.qkv: the forward kept no x·Aᵀ`);
    dh1 = loraLinearPartsBackward(dys, a.h1, xa, qkvLora(lq, parts), { dA: lq.gA, dB: lq.gB, accumulate: true, name: p + 'attn.qkv', dropout: dropoutOf(ctx, lq) }).dx;
  } else {
    dh1 = matmulWBackwardInput(dys[0], parts[0].weight, { name: `${p}attn.qkv.dx` });
    matmulWBackwardInput(dys[1], parts[1].weight, { out: dh1, accumulate: true });
    matmulWBackwardInput(dys[2], parts[2].weight, { out: dh1, accumulate: true });
  }
  for (const t of [dq, dk, g.dv]) t.release();
  const dx = rmsnormBackward(dh1, x, w.get(p + 'norm1.weight'), a.rstd1).dx;
  dh1.release();
  addInPlace(dx, dx2);
  dx2.release();
  return dx;
}

export interface VisionForwardOptions {
  /** read back the golden intermediates (slow) */
  capture?: boolean;
  /** keep what visionBackward needs (a train forward with vision LoRA) */
  keep?: boolean;
  /** with keep: only each block's input; the backward recomputes the block */
  recompute?: boolean;
}

/**
 * image_embeds [M, H] (merged-token order, as the decoder consumes them) for the images of
 * pixelValues [N, K] / imageGridThw [n, 3], with the LoRA of `ctx` on the vision modules when on.
 * With `capture`, also the intermediates; with `keep`, the saved forward for visionBackward.
 */
export async function visionForward(
  ctx: TextCtx, pixelValues: Float32Array, imageGridThw: ArrayLike<number>, opts: VisionForwardOptions = {},
): Promise<{ imageEmbeds: Tensor; capture?: VisionCapture; saved?: VisionSaved }> {
  const w = ctx.w, v = ctx.cfg.vision;
  const C = v.hiddenSize, hd = v.headDim, unit = v.spatialMergeSize ** 2;
  const K = v.inChannels * v.temporalPatchSize * v.patchSize * v.patchSize;
  const wi = getWindowIndex(imageGridThw, { windowSize: v.windowSize, spatialMergeSize: v.spatialMergeSize, patchSize: v.patchSize });
  const N = wi.numPatches, M = wi.numMergedTokens;
  if (pixelValues.length !== N * K) throw new Error(`vision: pixel_values has ${pixelValues.length} values, image_grid_thw implies [${N}, ${K}]`);
  const cap: Partial<VisionCapture> & { blockOut: Float32Array[] } = { blockOut: [] };
  const grab = async (t: Tensor) => (await readMany([t]))[0] as Float32Array;
  const keep = !!opts.keep, lowest = keep ? lowestAdaptedBlock(ctx) : v.depth;

  // 1. patch embed
  const pv = fromData(pixelValues, [N, K], 'f32', 'pixel_values');
  const pe = patchEmbed(pv, w.get('visual.patch_embed.proj.weight'));
  pv.release();
  if (opts.capture) {
    cap.patchEmbeds = await grab(pe);
    cap.ropeFreqs = visionRopeFreqs(wi.patchPos, hd, 10000);
    Object.assign(cap, { windowIndex: wi.windowIndex, cuWindowSeqlens: wi.cuWindowSeqlens, cuSeqlens: wi.cuSeqlens });
  }

  // 2-4. window order: hidden states as [M, unit·C] rows gathered by window_index; rotary
  // positions permuted the same way on the CPU, so the tables are built in window order
  const widx = fromData(wi.windowIndex, [M], 'i32', 'window_index');
  let x = gatherRows(pe.view([M, unit * C]), widx).view([N, C]);
  pe.release();
  const pos = new Int32Array(N * 2);
  for (let i = 0; i < M; i++) pos.set(wi.patchPos.subarray(wi.windowIndex[i] * unit * 2, (wi.windowIndex[i] + 1) * unit * 2), i * unit * 2);
  const rope = visionRopeTables(pos, hd, 10000);
  const cuWin = segments(wi.cuWindowSeqlens, 'cu_window_seqlens'), cuFull = segments(wi.cuSeqlens, 'cu_seqlens');

  // 5. blocks
  const inputs: (Tensor | undefined)[] = [], acts: (VisionBlockActs | undefined)[] = [];
  for (let b = 0; b < v.depth; b++) {
    const kb = keep && b >= lowest; // blocks below the lowest adapted one need nothing for the backward
    const r = visionBlockForward(ctx, b, x, rope, v.fullattBlockIndexes.includes(b) ? cuFull : cuWin, kb && !opts.recompute);
    inputs.push(kb ? x : undefined);
    acts.push(r.acts);
    if (!kb) x.release();
    x = r.out;
    if (opts.capture) cap.blockOut.push(await grab(x));
  }

  // 6. merger
  const nq = rmsnorm(x, w.get('visual.merger.ln_q.weight'), VISION_EPS);
  const z = linear(ctx, 'visual.merger.mlp.0', nq.y.view([M, unit * C]), keep);
  const zg = gelu(z.y);
  const merged = linear(ctx, 'visual.merger.mlp.2', zg, keep);
  if (opts.capture) cap.mergerOutWindowed = await grab(merged.y);

  // 7. un-permute
  const imageEmbeds = empty([M, v.outHiddenSize], 'f32', 'image_embeds');
  scatterRows(merged.y, widx, imageEmbeds);
  merged.y.release();
  let saved: VisionSaved | undefined;
  if (keep) {
    saved = { N, M, widx, rope, cuWin, cuFull, inputs, acts: opts.recompute ? undefined : acts, lowest, xFinal: x, rstdQ: nq.rstd, nq: nq.y, z: z.y, zg, xa0: z.xa, xa2: merged.xa };
  } else {
    for (const t of [x, nq.rstd, nq.y, z.y, zg, widx, rope.cos, rope.sin, cuWin.cu, cuFull.cu]) t.release();
  }
  return { imageEmbeds, capture: opts.capture ? (cap as VisionCapture) : undefined, saved };
}

/**
 * Backward of a kept vision forward from dImageEmbeds [M, H] (merged-token order): through the
 * un-permute, the merger (mlp.2, GELU, mlp.0, ln_q) and the blocks down to the lowest adapted one,
 * accumulating the vision LoRA gradients. Frees the saved activations block by block.
 */
export function visionBackward(ctx: TextCtx, s: VisionSaved, dImageEmbeds: Tensor): void {
  const v = ctx.cfg.vision, C = v.hiddenSize, unit = v.spatialMergeSize ** 2;
  if (dImageEmbeds.numel !== s.M * v.outHiddenSize) throw new Error(`visionBackward: d image_embeds "${dImageEmbeds.name}" [${dImageEmbeds.shape}] must be [${s.M}, ${v.outHiddenSize}]`);
  const dmerged = gatherRows(dImageEmbeds.view([s.M, v.outHiddenSize]), s.widx); // the un-permute's transpose
  const dzg = linearBackward(ctx, 'visual.merger.mlp.2', dmerged, s.zg, s.xa2);
  dmerged.release();
  if (s.lowest >= v.depth && !ctx.lora.has('visual.merger.mlp.0')) {
    dzg.release();
    return;
  }
  const dz = geluBackward(dzg, s.z);
  dzg.release();
  const dnq = linearBackward(ctx, 'visual.merger.mlp.0', dz, s.nq.view([s.M, unit * C]), s.xa0);
  dz.release();
  if (s.lowest >= v.depth) {
    dnq.release();
    return;
  }
  let d = rmsnormBackward(dnq.view([s.N, C]), s.xFinal, ctx.w.get('visual.merger.ln_q.weight'), s.rstdQ).dx;
  dnq.release();
  for (let b = v.depth - 1; b >= s.lowest; b--) {
    const x = s.inputs[b]!, cu = v.fullattBlockIndexes.includes(b) ? s.cuFull : s.cuWin;
    let a = s.acts?.[b];
    if (!a) {
      const r = visionBlockForward(ctx, b, x, s.rope, cu, true);
      r.out.release();
      a = r.acts!;
    }
    const dx = visionBlockBackward(ctx, b, x, a, d, s.rope, cu);
    releaseBlockActs(a);
    if (s.acts) s.acts[b] = undefined;
    d.release();
    d = dx;
  }
  d.release();
}
