// Log-softmax gather (log p of each row's target id) and masked cross-entropy, whole or in vocab
// chunks. Chunked use (the model computes logits for one vocab slice at a time):
//
//   const st = lsgBegin(targets);                         // targets i32 [T]
//   for (v0 of chunks) lsgChunk(st, logitsChunk, v0);     // logits [T, Vc] for ids v0..v0+Vc-1
//   const r = lsgFinish(st);   // or ceFinish(st) for the masked mean loss
//   // backward, chunk by chunk (recompute or keep the chunk's logits):
//   const dl = lsgBackwardChunk(logitsChunk, targets, r.lse, dlogp, v0);   // [T, Vc]
//
// Rows whose target is negative (or == ignoreIndex) are ignored: logp 0, no gradient.
import code from '../../shaders/softmax_gather.wgsl?raw';
import { dispatch, grid, kernel } from '../gpu/kernel.ts';
import { empty, type Tensor } from '../gpu/tensor.ts';

const FILE = 'softmax_gather.wgsl';
const WG = 64;
const K = {
  chunk: kernel(FILE, code, 'lsg_chunk', { WG }),
  finish: kernel(FILE, code, 'lsg_finish', { WG }),
  ceFinish: kernel(FILE, code, 'ce_finish', { WG }),
  ceDlogp: kernel(FILE, code, 'ce_dlogp', { WG }),
  backward: kernel(FILE, code, 'lsg_backward', { WG }),
};

/** A chunk of logits: rows of `t` (f32 [T, W]), columns [col0, col0 + vc) of it. */
export interface LogitsSlice {
  t: Tensor;
  col0?: number;
  vc?: number;
}

export interface LsgState {
  targets: Tensor;
  rows: number;
  ignoreIndex: number;
  /** [T, 4] per row: running max, sumexp relative to it, target logit, argmax (as f32) */
  state: Tensor;
  /** chunks folded in so far */
  chunks: number;
  /** vocab ids covered so far (sum of chunk widths) */
  vocab: number;
}

export interface LsgResult {
  /** [T] log p(target); 0 on ignored rows */
  logp: Tensor;
  /** [T] logsumexp per row: save for backward */
  lse: Tensor;
  /** [T] i32 first index of the row maximum (for token accuracy) */
  argmax: Tensor;
}

export interface CeResult extends LsgResult {
  /** [1] mean over kept rows of −logp (0 when no row is kept) */
  loss: Tensor;
  /** [4] f32: loss, numKept, numCorrect (argmax == target on kept rows), sum of −logp */
  stats: Tensor;
}

function rowsOf(targets: Tensor): number {
  if (targets.dtype !== 'i32' || targets.shape.length !== 1) throw new Error(`softmaxGather: targets "${targets.name}" must be i32 [T], got ${targets.dtype} [${targets.shape}]`);
  return targets.shape[0];
}

function slice(x: Tensor | LogitsSlice, rows: number, what: string): { t: Tensor; ld: number; col0: number; vc: number } {
  const s = 'buffer' in x ? { t: x } : x;
  const t = s.t;
  if (t.dtype !== 'f32' || t.shape.length !== 2) throw new Error(`softmaxGather: ${what} "${t.name}" must be f32 [T, V], got ${t.dtype} [${t.shape}]`);
  const [r, w] = t.shape;
  if (r !== rows) throw new Error(`softmaxGather: ${what} "${t.name}" has ${r} rows but targets have ${rows}`);
  const col0 = s.col0 ?? 0, vc = s.vc ?? w - col0;
  if (col0 < 0 || vc < 1 || col0 + vc > w) throw new Error(`softmaxGather: columns [${col0}, ${col0 + vc}) are outside ${what} "${t.name}" [${t.shape}]`);
  return { t, ld: w, col0, vc };
}

// params: t, vc, ld, col0, voff, first, ignore, dloss
const FMT = 'uuuuuuif';
const u = undefined;

/** Start a chunked log-softmax gather over `targets` (i32 [T]). */
export function lsgBegin(targets: Tensor, ignoreIndex = -100): LsgState {
  const rows = rowsOf(targets);
  return { targets, rows, ignoreIndex, state: empty([rows, 4], 'f32', 'lsg.state'), chunks: 0, vocab: 0 };
}

/** Fold logits for vocab ids [vOffset, vOffset + Vc) into the running state. */
export function lsgChunk(st: LsgState, logits: Tensor | LogitsSlice, vOffset: number): void {
  const s = slice(logits, st.rows, 'logits chunk');
  if (st.rows) dispatch(K.chunk, [s.t, st.targets, st.state], grid(st.rows), [st.rows, s.vc, s.ld, s.col0, vOffset, st.chunks === 0 ? 1 : 0, st.ignoreIndex, 0], FMT);
  st.chunks++;
  st.vocab += s.vc;
}

function outputs(rows: number): LsgResult {
  return { logp: empty([rows], 'f32', 'lsg.logp'), lse: empty([rows], 'f32', 'lsg.lse'), argmax: empty([rows], 'i32', 'lsg.argmax') };
}

function started(st: LsgState): void {
  if (!st.chunks) throw new Error('softmaxGather: finish called before any lsgChunk');
}

/** logp, lse, argmax per row; releases the running state. */
export function lsgFinish(st: LsgState): LsgResult {
  started(st);
  const r = outputs(st.rows);
  if (st.rows) dispatch(K.finish, [undefined, st.targets, st.state, r.logp, r.lse, r.argmax], grid(Math.ceil(st.rows / WG)), [st.rows, 0, 0, 0, 0, 0, st.ignoreIndex, 0], FMT);
  st.state.release();
  return r;
}

/** Masked cross-entropy from the folded state: mean of −logp over kept rows, counted on the GPU. */
export function ceFinish(st: LsgState): CeResult {
  started(st);
  const r = outputs(st.rows);
  const loss = empty([1], 'f32', 'ce.loss'), stats = empty([4], 'f32', 'ce.stats');
  dispatch(K.ceFinish, [undefined, st.targets, st.state, r.logp, r.lse, r.argmax, undefined, undefined, stats, loss], 1, [st.rows, 0, 0, 0, 0, 0, st.ignoreIndex, 0], FMT);
  st.state.release();
  return { ...r, loss, stats };
}

/** dlogp [T] of the mean cross-entropy: −dloss/numKept on kept rows, 0 elsewhere (numKept read on the GPU). */
export function ceDlogp(targets: Tensor, stats: Tensor, dloss = 1, ignoreIndex = -100): Tensor {
  const rows = rowsOf(targets);
  if (stats.numel !== 4) throw new Error(`ceDlogp: stats "${stats.name}" must be the [4] tensor from ceFinish`);
  const d = empty([rows], 'f32', 'ce.dlogp');
  if (rows) dispatch(K.ceDlogp, [u, targets, u, u, u, u, d, u, u, u, u, u, stats], grid(Math.ceil(rows / WG)), [rows, 0, 0, 0, 0, 0, ignoreIndex, dloss], FMT);
  return d;
}

/** dlogits [T, Vc] = dlogp·(onehot − softmax) for vocab ids [vOffset, vOffset + Vc), from the final lse. */
export function lsgBackwardChunk(logits: Tensor | LogitsSlice, targets: Tensor, lse: Tensor, dlogp: Tensor, vOffset: number): Tensor {
  const rows = rowsOf(targets);
  const s = slice(logits, rows, 'logits chunk');
  if (lse.numel !== rows || dlogp.numel !== rows) throw new Error(`lsgBackwardChunk: lse "${lse.name}" [${lse.shape}] and dlogp "${dlogp.name}" [${dlogp.shape}] must have ${rows} elements`);
  const out = empty([rows, s.vc], 'f32', 'lsg.dlogits');
  const n = rows * s.vc;
  if (n) dispatch(K.backward, [s.t, targets, u, u, u, u, u, out, u, u, lse, dlogp], grid(Math.ceil(n / WG)), [rows, s.vc, s.ld, s.col0, vOffset, 0, -100, 0], FMT);
  return out;
}

// ---- whole-logits forms --------------------------------------------------------------------

/** log p(target) per row of logits [T, V]. */
export function logSoftmaxGather(logits: Tensor, targets: Tensor, ignoreIndex = -100): LsgResult {
  const st = lsgBegin(targets, ignoreIndex);
  lsgChunk(st, logits, 0);
  return lsgFinish(st);
}

export function logSoftmaxGatherBackward(logits: Tensor, targets: Tensor, lse: Tensor, dlogp: Tensor): Tensor {
  return lsgBackwardChunk(logits, targets, lse, dlogp, 0);
}

/** Masked mean cross-entropy of logits [T, V] against targets (ignoreIndex rows skipped). */
export function crossEntropyMasked(logits: Tensor, targets: Tensor, ignoreIndex = -100): CeResult {
  const st = lsgBegin(targets, ignoreIndex);
  lsgChunk(st, logits, 0);
  return ceFinish(st);
}

/** dlogits [T, V] of crossEntropyMasked (times dloss); the temporary dlogp is released. */
export function crossEntropyMaskedBackward(logits: Tensor, targets: Tensor, r: CeResult, dloss = 1, ignoreIndex = -100): Tensor {
  const d = ceDlogp(targets, r.stats, dloss, ignoreIndex);
  const out = lsgBackwardChunk(logits, targets, r.lse, d, 0);
  d.release();
  return out;
}
