// The text decoder on the GPU, forward and backward by hand (llm.c style).
//
//   layer(x):  h1 = RMSNorm(x)                          input_layernorm
//              q, k, v = h1·Wq/k/vᵀ + b  (+ LoRA)         GQA projections
//              q, k = M-RoPE(q), M-RoPE(k)
//              a = causal attention(q, k, v)            kept: logsumexp per (row, head)
//              x2 = x + a·Woᵀ (+ LoRA)
//              h2 = RMSNorm(x2)                         post_attention_layernorm
//              x' = x2 + down(silu(gate(h2)) · up(h2))  (+ LoRA on each)
//
// LoRA dropout (ctx.dropout, train passes only) is applied inside each adapted linear by a hash
// mask of (seed, module, element) that the backward redraws (ops/lora.ts, ops/dropout.ts).
// A forward with `keep` returns the activations its backward reads (LayerActs); the backward
// walks them in reverse and accumulates LoRA gradients. The base weights are frozen: only
// activations get gradients, plus lora_A/lora_B. Attention is a callback so generation can route
// k/v through a KV cache with the same layer code.
import { gpu } from '../gpu/device.ts';
import { fromData, zeros, type Tensor } from '../gpu/tensor.ts';
import { add, addInPlace, gatherRows, scatterRows } from '../ops/elementwise.ts';
import { lsgBackwardChunk, lsgBegin, lsgChunk, lsgFinish } from '../ops/softmaxGather.ts';
import { lmHeadLogSoftmax, lmHeadLogSoftmaxBackward } from '../ops/lmHead.ts';
import { loraLinear, loraLinearBackward, type DropoutSpec } from '../ops/lora.ts';
import { matmul, matmulBackwardInput } from '../ops/matmul.ts';
import { matmulW, matmulWBackwardInput } from '../ops/matmulNf4.ts';
import { rmsnorm, rmsnormBackward } from '../ops/rmsnorm.ts';
import { ropeApply, ropeBackward, type RopeTables } from '../ops/rope.ts';
import { swiglu, swigluBackward } from '../ops/swiglu.ts';
import { attentionCausal, attentionCausalBackward } from '../ops/attention.ts';
import type { QwenVLConfig } from './config.ts';
import type { GpuWeights } from './gpuWeights.ts';
import type { LoraModuleSpec } from './lora.ts';

/** One adapted linear: lora_A [r, in], lora_B [out, r] and their gradients, all f32. */
export interface GpuLoraModule {
  spec: LoraModuleSpec;
  /** dropout stream of the module (dropoutStream(name)): modules draw independent masks */
  stream: number;
  A: Tensor;
  B: Tensor;
  gA: Tensor;
  gB: Tensor;
}

export const PROJ = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'] as const;
export type Proj = (typeof PROJ)[number];

export interface TextCtx {
  cfg: QwenVLConfig;
  w: GpuWeights;
  /** by canonical module name */
  lora: Map<string, GpuLoraModule>;
  /** apply the adapter in this pass */
  loraOn: boolean;
  /** scored rows per lm_head block (default: as many as one binding of logits allows) */
  rowBlock?: number;
  /** the lm_head + log-softmax implementation (default lmHeadPath()) */
  lmHead?: LmHeadPath;
  /** LoRA dropout of this pass (train forwards and their backward only; absent when p = 0) */
  dropout?: { p: number; seed: number };
}

/** Everything a layer's backward reads (the layer input x is kept by the caller). */
export interface LayerActs {
  rstd1: Tensor; h1: Tensor;
  q: Tensor; k: Tensor; v: Tensor; attn: Tensor; lse: Tensor;
  x2: Tensor; rstd2: Tensor; h2: Tensor;
  gate: Tensor; up: Tensor; act: Tensor;
  /** x·Aᵀ per adapted projection (for dB) */
  xa: Partial<Record<Proj, Tensor>>;
}

export function releaseActs(a: LayerActs): void {
  for (const t of [a.rstd1, a.h1, a.q, a.k, a.v, a.attn, a.lse, a.x2, a.rstd2, a.h2, a.gate, a.up, a.act, ...Object.values(a.xa)]) t?.release();
}

/** Attention of one layer: q [L,Hq,D], k/v [L,Hkv,D] (rotated) → out [L,Hq,D] (+ lse when kept). */
export type Attend = (layer: number, q: Tensor, k: Tensor, v: Tensor, keep: boolean) => { out: Tensor; lse?: Tensor };

export const causalAttend: Attend = (_l, q, k, v, keep) => {
  const r = attentionCausal(q, k, v);
  if (!keep) {
    r.lse.release();
    return { out: r.out };
  }
  return r;
};

export function loraOf(ctx: TextCtx, module: string): GpuLoraModule | undefined {
  return ctx.loraOn ? ctx.lora.get(module) : undefined;
}

/** The dropout mask spec of an adapted module in this pass (undefined: no dropout). */
export function dropoutOf(ctx: TextCtx, l: GpuLoraModule): DropoutSpec | undefined {
  return ctx.dropout && ctx.dropout.p > 0 ? { p: ctx.dropout.p, seed: ctx.dropout.seed, stream: l.stream } : undefined;
}

/** nn.Linear `module` (+ its LoRA branch when on) on x [T, in] → y [T, out], xa when adapted. */
export function linear(ctx: TextCtx, module: string, x: Tensor, keep: boolean): { y: Tensor; xa?: Tensor } {
  const w = ctx.w.get(`${module}.weight`);
  const bias = ctx.w.has(`${module}.bias`) ? ctx.w.get(`${module}.bias`) : undefined;
  const l = loraOf(ctx, module);
  if (!l) return { y: matmulW(x, w, { bias, name: `${module}.y` }) };
  const r = loraLinear(x, { weight: w, bias, loraA: l.A, loraB: l.B, scaling: l.spec.scaling }, { name: module, dropout: dropoutOf(ctx, l) });
  if (!keep) {
    r.xa?.release();
    return { y: r.y };
  }
  return r;
}

/** dx of `linear` from dy; accumulates the module's lora_A / lora_B gradients when adapted. */
export function linearBackward(ctx: TextCtx, module: string, dy: Tensor, x: Tensor, xa: Tensor | undefined): Tensor {
  const w = ctx.w.get(`${module}.weight`);
  const l = loraOf(ctx, module);
  if (!l) return matmulWBackwardInput(dy, w, { name: `${module}.dx` });
  if (!xa) throw new Error(`backward of ${module}: the forward kept no x·Aᵀ`);
  const g = loraLinearBackward(dy, x, xa, { weight: w, loraA: l.A, loraB: l.B, scaling: l.spec.scaling }, { dA: l.gA, dB: l.gB, accumulate: true, name: module, dropout: dropoutOf(ctx, l) });
  return g.dx!;
}

export interface LayerOut { out: Tensor; acts?: LayerActs }

/** One decoder layer on x [L, H]; x is left untouched. */
export function layerForward(ctx: TextCtx, li: number, x: Tensor, rope: RopeTables, opts: { keep: boolean; attend?: Attend }): LayerOut {
  const t = ctx.cfg.text, L = x.shape[0], D = t.headDim, Hq = t.numAttentionHeads, Hkv = t.numKeyValueHeads;
  const keep = opts.keep, p = `model.layers.${li}.`;
  const n1 = rmsnorm(x, ctx.w.get(p + 'input_layernorm.weight'), t.rmsNormEps);
  const q0 = linear(ctx, p + 'self_attn.q_proj', n1.y, keep);
  const k0 = linear(ctx, p + 'self_attn.k_proj', n1.y, keep);
  const v0 = linear(ctx, p + 'self_attn.v_proj', n1.y, keep);
  const q = ropeApply(q0.y.view([L, Hq, D]), rope);
  const k = ropeApply(k0.y.view([L, Hkv, D]), rope);
  q0.y.release();
  k0.y.release();
  const v = v0.y.view([L, Hkv, D]);
  const a = (opts.attend ?? causalAttend)(li, q, k, v, keep);
  const attn = a.out.view([L, Hq * D]);
  const o = linear(ctx, p + 'self_attn.o_proj', attn, keep);
  const x2 = add(x, o.y);
  o.y.release();
  const n2 = rmsnorm(x2, ctx.w.get(p + 'post_attention_layernorm.weight'), t.rmsNormEps);
  const g = linear(ctx, p + 'mlp.gate_proj', n2.y, keep);
  const u = linear(ctx, p + 'mlp.up_proj', n2.y, keep);
  const act = swiglu(g.y, u.y);
  const d = linear(ctx, p + 'mlp.down_proj', act, keep);
  const out = add(x2, d.y);
  d.y.release();
  if (!keep) {
    for (const tt of [n1.y, n1.rstd, q, k, v, a.out, x2, n2.y, n2.rstd, g.y, u.y, act]) tt.release();
    return { out };
  }
  const xa: LayerActs['xa'] = {};
  const save = (proj: Proj, r: { xa?: Tensor }) => { if (r.xa) xa[proj] = r.xa; };
  save('self_attn.q_proj', q0); save('self_attn.k_proj', k0); save('self_attn.v_proj', v0); save('self_attn.o_proj', o);
  save('mlp.gate_proj', g); save('mlp.up_proj', u); save('mlp.down_proj', d);
  return { out, acts: { rstd1: n1.rstd, h1: n1.y, q, k, v, attn, lse: a.lse!, x2, rstd2: n2.rstd, h2: n2.y, gate: g.y, up: u.y, act, xa } };
}

/** dx of one layer from dout = d(layer output); releases nothing of `acts` (the caller does). */
export function layerBackward(ctx: TextCtx, li: number, x: Tensor, a: LayerActs, dout: Tensor, rope: RopeTables): Tensor {
  const t = ctx.cfg.text, L = x.shape[0], D = t.headDim, Hq = t.numAttentionHeads, Hkv = t.numKeyValueHeads;
  const p = `model.layers.${li}.`;
  // MLP
  const dact = linearBackward(ctx, p + 'mlp.down_proj', dout, a.act, a.xa['mlp.down_proj']);
  const { dgate, dup } = swigluBackward(dact, a.gate, a.up);
  dact.release();
  const dh2 = linearBackward(ctx, p + 'mlp.gate_proj', dgate, a.h2, a.xa['mlp.gate_proj']);
  const dh2u = linearBackward(ctx, p + 'mlp.up_proj', dup, a.h2, a.xa['mlp.up_proj']);
  addInPlace(dh2, dh2u);
  for (const tt of [dgate, dup, dh2u]) tt.release();
  const dx2 = rmsnormBackward(dh2, a.x2, ctx.w.get(p + 'post_attention_layernorm.weight'), a.rstd2).dx;
  dh2.release();
  addInPlace(dx2, dout); // residual
  // attention
  const dattn = linearBackward(ctx, p + 'self_attn.o_proj', dx2, a.attn, a.xa['self_attn.o_proj']);
  const g = attentionCausalBackward(a.q, a.k, a.v, a.attn.view([L, Hq, D]), a.lse, dattn.view([L, Hq, D]));
  dattn.release();
  const dq = ropeBackward(g.dq, rope);
  const dk = ropeBackward(g.dk, rope);
  g.dq.release();
  g.dk.release();
  const dh1 = linearBackward(ctx, p + 'self_attn.q_proj', dq.view([L, Hq * D]), a.h1, a.xa['self_attn.q_proj']);
  const dh1k = linearBackward(ctx, p + 'self_attn.k_proj', dk.view([L, Hkv * D]), a.h1, a.xa['self_attn.k_proj']);
  const dh1v = linearBackward(ctx, p + 'self_attn.v_proj', g.dv.view([L, Hkv * D]), a.h1, a.xa['self_attn.v_proj']);
  addInPlace(dh1, dh1k);
  addInPlace(dh1, dh1v);
  for (const tt of [dq, dk, g.dv, dh1k, dh1v]) tt.release();
  const dx = rmsnormBackward(dh1, x, ctx.w.get(p + 'input_layernorm.weight'), a.rstd1).dx;
  dh1.release();
  addInPlace(dx, dx2);
  dx2.release();
  return dx;
}

// ---------------------------------------------------------------- lm_head + log-softmax gather

/**
 * 'fused': ops/lmHead.ts, logits never in memory; a train forward also forms the
 * softmax-weighted mean of the lm_head rows in the same pass, so the backward is O(rows·H) (when
 * H % 4 ≠ 0 the backward recomputes the logits per vocabulary split instead). 'chunked': the earlier path, a [rows, vocabChunk] logits tensor per shard
 * (matmul) folded by ops/softmaxGather.ts, kept for the backward when small; kept for comparison.
 */
export type LmHeadPath = 'fused' | 'chunked';
let lmHeadDefault: LmHeadPath | undefined;

/** Set the default lm_head path (undefined: back to lmHeadPath's choice). */
export function setLmHeadPath(p: LmHeadPath | undefined): void {
  lmHeadDefault = p;
}

/**
 * The path in use: ctx.lmHead, else setLmHeadPath(), else PATCHWORK_LMHEAD, else by adapter: CPU
 * adapters (SwiftShader, llvmpipe, WARP) run 'chunked', whose train step is two GEMMs over
 * 2 cores either way and measured faster there (README); real GPUs run 'fused' (no logits
 * traffic, many workgroups, an O(rows·H) backward).
 */
export function lmHeadPath(ctx?: TextCtx): LmHeadPath {
  if (ctx?.lmHead) return ctx.lmHead;
  if (lmHeadDefault) return lmHeadDefault;
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.PATCHWORK_LMHEAD;
  if (env === 'chunked' || env === 'fused') return env;
  return /swiftshader|llvmpipe|lavapipe|warp|cpu/i.test(gpu().adapterName) ? 'chunked' : 'fused';
}

/**
 * Scored rows in blocks: each block's logits chunk [rows, vocabChunk] must fit one binding, so long
 * sequences are cut into row blocks; a block runs over every vocabulary shard.
 */
export interface ScoreBlock {
  /** offset of the block in the scored rows */
  start: number;
  n: number;
  /** [n, H] final-norm hidden states of the scored rows */
  hs: Tensor;
  /** i32 [n] target ids */
  targets: Tensor;
  /** [n] log p(target), logsumexp, argmax (i32) */
  logp: Tensor;
  lse: Tensor;
  argmax: Tensor;
  /** chunked path: the logits chunks, kept from the forward when small enough (else the backward recomputes them) */
  logits?: Tensor[];
  /** computed by the fused path (its backward is the fused one too) */
  fused?: boolean;
  /** fused train forward: [n, H] softmax-weighted mean of the lm_head rows, so the backward recomputes nothing */
  expected?: Tensor;
}

export function releaseBlocks(bs: ScoreBlock[]): void {
  for (const b of bs) for (const t of [b.hs, b.targets, b.logp, b.lse, b.argmax, ...(b.logits ?? []), ...(b.expected ? [b.expected] : [])]) t.release();
}

/** Keep a block's logits for the backward up to this many bytes: recomputing them is a third of the lm_head work. */
const KEEP_LOGITS_BYTES = 64 * 2 ** 20;
/** Fused path: rows per block so that a block's [rows, H] tensors stay below this. */
const FUSED_PARTIAL_BYTES = 64 * 2 ** 20;

/** Fused path: scored rows per block. */
function fusedRowsPerBlock(ctx: TextCtx): number {
  if (ctx.rowBlock) return ctx.rowBlock;
  // the partial sums [P, rows, H] grow with the rows (ops/lmHead.ts bounds them by growing the
  // splits); 64 MiB for a block's kept hidden states is the bound here
  return Math.max(16, Math.floor(FUSED_PARTIAL_BYTES / (4 * ctx.cfg.text.hiddenSize)));
}

/** Rows per block so that a [rows, vocabChunk] f32 logits chunk fits one binding. */
export function rowsPerBlock(ctx: TextCtx): number {
  if (ctx.rowBlock) return ctx.rowBlock;
  const maxBind = Math.min(gpu().limits.maxStorageBufferBindingSize, gpu().limits.maxBufferSize);
  return Math.max(1, Math.floor(maxBind / (4 * ctx.w.vocabChunk)));
}

/** logits [n, Vc] of one vocabulary shard for hidden rows hs [n, H]. */
export function logitsChunk(ctx: TextCtx, hs: Tensor, shard: number): Tensor {
  return matmul(hs, ctx.w.lmHead[shard].t, { name: 'logits.chunk' });
}

/**
 * log p(targets[i] | row rows[i]) of the final-norm hidden states `last` [L, H], with the lm_head
 * applied one vocabulary shard at a time (a [T, V] logits tensor never exists).
 */
export function lmHeadScore(ctx: TextCtx, last: Tensor, rows: Int32Array, targets: Int32Array, forBackward = false): ScoreBlock[] {
  const fused = lmHeadPath(ctx) === 'fused';
  const per = fused ? fusedRowsPerBlock(ctx) : rowsPerBlock(ctx), blocks: ScoreBlock[] = [];
  for (let start = 0; start < rows.length; start += per) {
    const n = Math.min(per, rows.length - start);
    const idx = fromData(rows.subarray(start, start + n), [n], 'i32', 'score.rows');
    const hs = gatherRows(last, idx);
    idx.release();
    const tg = fromData(targets.subarray(start, start + n), [n], 'i32', 'score.targets');
    if (fused) {
      const r = lmHeadLogSoftmax(hs, ctx.w.lmHead, tg, { expected: forBackward });
      blocks.push({ start, n, hs, targets: tg, logp: r.logp, lse: r.lse, argmax: r.argmax, fused: true, ...(r.expected ? { expected: r.expected } : {}) });
      continue;
    }
    const st = lsgBegin(tg);
    const keep = forBackward && n * ctx.cfg.text.vocabSize * 4 <= KEEP_LOGITS_BYTES;
    const logits = ctx.w.lmHead.map((s, i) => {
      const lg = logitsChunk(ctx, hs, i);
      lsgChunk(st, lg, s.v0);
      if (keep) return lg;
      lg.release();
      return undefined;
    });
    const r = lsgFinish(st);
    blocks.push({ start, n, hs, targets: tg, logp: r.logp, lse: r.lse, argmax: r.argmax, ...(keep ? { logits: logits as Tensor[] } : {}) });
  }
  return blocks;
}

/**
 * d last [L, H] from dlogp (one per scored row) and optional d hs (a value head on the same rows):
 * each logits chunk is recomputed, turned into dlogits and folded into d hs.
 */
export function lmHeadBackward(ctx: TextCtx, blocks: ScoreBlock[], rows: Int32Array, dlogp: Float32Array, L: number, dhidden?: Float32Array): Tensor {
  const H = ctx.cfg.text.hiddenSize;
  const dlast = zeros([L, H], 'f32', 'dlast');
  for (const b of blocks) {
    const dl = fromData(dlogp.subarray(b.start, b.start + b.n), [b.n], 'f32', 'dlogp');
    let dhs: Tensor;
    if (b.fused) {
      const given = dhidden ? fromData(dhidden.subarray(b.start * H, (b.start + b.n) * H), [b.n, H], 'f32', 'dhs') : undefined;
      dhs = lmHeadLogSoftmaxBackward(b.hs, ctx.w.lmHead, b.targets, b.lse, dl, { ...(given ? { out: given, accumulate: true } : {}), fromExpected: b.expected });
    } else {
      dhs = dhidden ? fromData(dhidden.subarray(b.start * H, (b.start + b.n) * H), [b.n, H], 'f32', 'dhs') : zeros([b.n, H], 'f32', 'dhs');
      ctx.w.lmHead.forEach((s, i) => {
        const lg = b.logits?.[i] ?? logitsChunk(ctx, b.hs, i);
        const dlg = lsgBackwardChunk(lg, b.targets, b.lse, dl, s.v0);
        if (!b.logits) lg.release();
        matmulBackwardInput(dlg, s.t, { out: dhs, accumulate: true });
        dlg.release();
      });
    }
    const idx = fromData(rows.subarray(b.start, b.start + b.n), [b.n], 'i32', 'score.rows');
    scatterRows(dhs, idx, dlast);
    for (const t of [dl, dhs, idx]) t.release();
  }
  return dlast;
}

/** Greedy ids of hidden rows hs [n, H] on the GPU (first maximum, as torch.argmax). */
export function argmaxIds(ctx: TextCtx, hs: Tensor): Tensor {
  const n = hs.shape[0];
  const tg = zeros([n], 'i32', 'argmax.targets');
  if (lmHeadPath(ctx) === 'fused') {
    const r = lmHeadLogSoftmax(hs, ctx.w.lmHead, tg);
    for (const t of [tg, r.logp, r.lse]) t.release();
    return r.argmax;
  }
  const st = lsgBegin(tg);
  ctx.w.lmHead.forEach((s, i) => {
    const lg = logitsChunk(ctx, hs, i);
    lsgChunk(st, lg, s.v0);
    lg.release();
  });
  const r = lsgFinish(st);
  for (const t of [tg, r.logp, r.lse]) t.release();
  return r.argmax;
}
