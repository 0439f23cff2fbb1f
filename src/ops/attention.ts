// Attention ops: causal GQA (text decoder, prefill and KV-cache decoding) and varlen attention over
// cu_seqlens segments (vision window / full attention). Forward returns the per-(row, head)
// logsumexp that the backward needs; backward recomputes the probabilities from it.
//
// Two kernel variants with the same contract (outputs and logsumexp agree, so a forward of one
// and a backward of the other mix freely): 'naive' (shaders/attention.wgsl, one thread per
// (row, head), no workgroup memory) and 'flash' (shaders/flash_attention.wgsl, FlashAttention-2
// style tiles in workgroup memory). tuneAttention() times both once per adapter and remembers the
// winner per direction (module map + localStorage), as tuneMatmul does; setAttentionVariant() or
// PATCHWORK_ATTENTION=naive|flash force one.
import code from '../../shaders/attention.wgsl?raw';
import flashCode from '../../shaders/flash_attention.wgsl?raw';
import { gpu } from '../gpu/device.ts';
import { dispatch, flush, grid, kernel, type Kernel } from '../gpu/kernel.ts';
import { empty, fromData, type Tensor } from '../gpu/tensor.ts';

const FILE = 'attention.wgsl';
const WG = 64;
/** head dims the register arrays are sized for; a kernel variant per bucket */
const MAXD = [32, 64, 128, 256];

const VEC = ['alias VT = vec4<f32>;', 'const VW: u32 = 4u;', 'fn vdot(a: VT, b: VT) -> f32 { return dot(a, b); }'];
const SCALAR = ['alias VT = f32;', 'const VW: u32 = 1u;', 'fn vdot(a: VT, b: VT) -> f32 { return a * b; }'];

// One pipeline per (entry, head dim): the register arrays are sized by a MAXD bucket (text), rows
// are vec4 when D % 4 == 0 (text), and D / VW is an override constant so loops have fixed counts.
const cache = new Map<string, Kernel>();
function k(entry: string, d: number): Kernel {
  const maxd = MAXD.find((m) => m >= d);
  if (maxd === undefined) throw new Error(`attention: head dim ${d} exceeds the supported maximum ${MAXD[MAXD.length - 1]}`);
  const vw = d % 4 === 0 ? 4 : 1;
  const key = `${entry}@${maxd}@${d}`;
  let kk = cache.get(key);
  if (!kk) {
    let src = code.replace('const MAXD: u32 = 128u;', `const MAXD: u32 = ${maxd}u;`);
    if (vw === 1) VEC.forEach((line, i) => (src = src.replace(line, SCALAR[i])));
    cache.set(key, (kk = kernel(`${FILE}@d${maxd}v${vw}`, src, entry, { DV: d / vw })));
  }
  return kk;
}

// Flash kernels: rows are vec4 chunks (DC = ceil(D/4) per row; the scalar row access when
// D % 4 != 0); staged tiles hold KT rows of MAXD floats, KT·MAXD = 1024 (4 KiB per tile).
const FLASH_WG = 16; // threads per workgroup, 4 pairs (or keys) each
function fk(entry: string, d: number): Kernel {
  const maxd = MAXD.find((m) => m >= d);
  if (maxd === undefined) throw new Error(`attention: head dim ${d} exceeds the supported maximum ${MAXD[MAXD.length - 1]}`);
  const vw = d % 4 === 0 ? 4 : 1;
  const key = `flash:${entry}@${maxd}@${d}`;
  let kk = cache.get(key);
  if (!kk) {
    let src = flashCode.replace('const MAXD: u32 = 128u;', `const MAXD: u32 = ${maxd}u;`).replace('const KT: u32 = 8u;', `const KT: u32 = ${1024 / maxd}u;`);
    if (vw === 1) src = src.replace(/\/\/<vec4>[\s\S]*?\/\/<\/vec4>/, '').replace('/*<scalar>', '').replace('</scalar>*/', '');
    cache.set(key, (kk = kernel(`flash_attention.wgsl@d${maxd}v${vw}`, src, entry, { DC: Math.ceil(d / 4) })));
  }
  return kk;
}

// ---- variant choice ---------------------------------------------------------------------------

export type AttentionVariant = 'naive' | 'flash';
/** the variant per direction: the backward's best may differ from the forward's */
export interface AttentionChoice { fwd: AttentionVariant; bwd: AttentionVariant }

const tuned = new Map<string, AttentionChoice>();
let forced: AttentionVariant | undefined;
const LS_KEY = 'patchwork.attentionVariant:';
const isVariant = (v: unknown): v is AttentionVariant => v === 'naive' || v === 'flash';

function envVariant(): AttentionVariant | undefined {
  const v = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.PATCHWORK_ATTENTION;
  return isVariant(v) ? v : undefined;
}

function storage(): Storage | undefined {
  try {
    return (globalThis as { localStorage?: Storage }).localStorage;
  } catch {
    return undefined;
  }
}

/** Force a variant for every later attention call ('auto' or undefined = back to the tuned/default choice). */
export function setAttentionVariant(v: AttentionVariant | 'auto' | undefined): void {
  forced = v === 'auto' ? undefined : v;
}

/**
 * Untuned: flash everywhere. Even on SwiftShader, where barriers are costly, its register-blocked
 * 4×4 blocks beat the one-thread-per-row kernel (2–3× forward, ~3× backward at the 3B shapes).
 */
function defaultChoice(_adapterName: string): AttentionChoice {
  return { fwd: 'flash', bwd: 'flash' };
}

/** The variants attention uses now: override, else the tuned choice for this adapter, else a guess. */
export function attentionVariant(): AttentionChoice {
  const f = forced ?? envVariant();
  if (f) return { fwd: f, bwd: f };
  const name = gpu().adapterName;
  let c = tuned.get(name);
  if (!c) {
    try {
      const s = JSON.parse(storage()?.getItem(LS_KEY + name) ?? 'null') as Partial<AttentionChoice> | null;
      if (s && isVariant(s.fwd) && isVariant(s.bwd)) tuned.set(name, (c = { fwd: s.fwd, bwd: s.bwd }));
    } catch { /* unreadable entry: tune again */ }
  }
  return c ?? defaultChoice(name);
}

export interface AttentionTuneResult { adapterName: string; choice: AttentionChoice; ms: Record<AttentionVariant, { fwd: number; bwd: number }> }

/**
 * Time both variants, forward and backward, on a representative causal GQA shape (default
 * T = 128, 8 query / 2 kv heads, D 64) and remember the faster per direction for this adapter.
 * Later calls return the cached answer unless `force`.
 */
export async function tuneAttention(opts: { t?: number; hq?: number; hkv?: number; d?: number; reps?: number; force?: boolean } = {}): Promise<AttentionTuneResult> {
  const { t = 128, hq = 8, hkv = 2, d = 64, reps = 2 } = opts;
  const name = gpu().adapterName;
  const inf = () => ({ fwd: Infinity, bwd: Infinity });
  const ms: AttentionTuneResult['ms'] = { naive: inf(), flash: inf() };
  if (!opts.force && tuned.has(name)) return { adapterName: name, choice: tuned.get(name)!, ms };
  const rnd = (len: number, s: number) => Float32Array.from({ length: len }, (_, i) => Math.sin(i * 12.9898 + s) * 0.5);
  const q = fromData(rnd(t * hq * d, 1), [t, hq, d], 'f32', 'tune.q');
  const kt = fromData(rnd(t * hkv * d, 2), [t, hkv, d], 'f32', 'tune.k');
  const v = fromData(rnd(t * hkv * d, 3), [t, hkv, d], 'f32', 'tune.v');
  const dy = fromData(rnd(t * hq * d, 4), [t, hq, d], 'f32', 'tune.dy');
  const idle = async () => { flush(); await gpu().device.queue.onSubmittedWorkDone(); };
  const variants: AttentionVariant[] = ['naive', 'flash'];
  for (let r = 0; r <= reps; r++) { // round 0 compiles and warms up
    for (const vv of variants) {
      const s = causalDims(q, kt, v, {});
      let t0 = performance.now();
      const f = forward('causal', q, kt, v, undefined, s, vv);
      await idle();
      const tf = performance.now() - t0;
      t0 = performance.now();
      const g = backward('causal', q, kt, v, f.out, f.lse, dy, undefined, s, vv);
      await idle();
      const tb = performance.now() - t0;
      if (r > 0) { ms[vv].fwd = Math.min(ms[vv].fwd, tf); ms[vv].bwd = Math.min(ms[vv].bwd, tb); }
      for (const x of [f.out, f.lse, g.dq, g.dk, g.dv]) x.release();
    }
  }
  for (const x of [q, kt, v, dy]) x.release();
  // Timings on a shared machine are noisy: keep the adapter-class default unless the other
  // variant is clearly (15%) faster.
  const guess = defaultChoice(name);
  const pick = (dir: 'fwd' | 'bwd'): AttentionVariant => {
    const a = guess[dir], b: AttentionVariant = a === 'naive' ? 'flash' : 'naive';
    return ms[b][dir] < 0.85 * ms[a][dir] ? b : a;
  };
  const choice = { fwd: pick('fwd'), bwd: pick('bwd') };
  tuned.set(name, choice);
  try { storage()?.setItem(LS_KEY + name, JSON.stringify(choice)); } catch { /* storage full or denied */ }
  return { adapterName: name, choice, ms };
}

export interface AttnForward {
  /** [Lq, Hq, D] */
  out: Tensor;
  /** [Lq, Hq] logsumexp of the scaled scores; save it for backward */
  lse: Tensor;
}
export interface AttnGrads {
  /** [Lq, Hq, D] */
  dq: Tensor;
  /** [Lk, Hkv, D], summed over the query heads sharing a kv head */
  dk: Tensor;
  dv: Tensor;
}

export interface CausalOpts {
  /** default 1/sqrt(D) */
  scale?: number;
  /** valid key rows; k/v may hold more rows (a KV cache's capacity). Default k.shape[0]. */
  kvLen?: number;
  /** position of query row 0 among the keys; default kvLen − Lq (queries are the last Lq positions) */
  qOffset?: number;
  /** kernel variant; default attentionVariant() (tuned per adapter) */
  variant?: AttentionVariant;
}

export interface VarlenOpts {
  /** default 1/sqrt(D) */
  scale?: number;
  /**
   * the longest segment (flash-attn's max_seqlen); lets the flash backward keep dS in a
   * rows × maxSeqlen scratch instead of recomputing it for dq. Must be >= every segment length.
   */
  maxSeqlen?: number;
  /** also mask keys after the query inside each segment (packed causal sequences); default false */
  causal?: boolean;
  /** kernel variant; default attentionVariant() (tuned per adapter) */
  variant?: AttentionVariant;
}

interface Dims { lq: number; lk: number; hq: number; hkv: number; d: number; scale: number; qOff: number; nseg: number; causal: number; maxSeqlen?: number }

function shape3(t: Tensor, what: string): [number, number, number] {
  if (t.shape.length !== 3) throw new Error(`attention: ${what} "${t.name}" must be [rows, heads, headDim], got [${t.shape}]`);
  if (t.dtype !== 'f32') throw new Error(`attention: ${what} "${t.name}" must be f32, got ${t.dtype}`);
  return t.shape as [number, number, number];
}

function dims(q: Tensor, kt: Tensor, v: Tensor, lk: number, scale: number | undefined): Omit<Dims, 'qOff' | 'nseg' | 'causal'> {
  const [lq, hq, d] = shape3(q, 'q');
  const [kr, hkv, dk] = shape3(kt, 'k');
  const [vr, hv, dv] = shape3(v, 'v');
  if (dk !== d || dv !== d) throw new Error(`attention: head dims differ: q "${q.name}" ${d}, k "${kt.name}" ${dk}, v "${v.name}" ${dv}`);
  if (hv !== hkv || vr !== kr) throw new Error(`attention: k "${kt.name}" [${kt.shape}] and v "${v.name}" [${v.shape}] differ`);
  if (hkv < 1 || hq % hkv !== 0) throw new Error(`attention: query heads ${hq} (q "${q.name}") must be a multiple of kv heads ${hkv} (k "${kt.name}")`);
  if (lk > kr) throw new Error(`attention: kvLen ${lk} exceeds the ${kr} rows of k "${kt.name}"`);
  return { lq, lk, hq, hkv, d, scale: scale ?? 1 / Math.sqrt(d) };
}

function params(s: Dims): [number[], string] {
  return [[s.lq, s.lk, s.hq, s.hkv, s.d, s.scale, s.qOff, s.nseg, s.causal], 'uuuuufuuu'];
}

function causalDims(q: Tensor, kt: Tensor, v: Tensor, o: CausalOpts): Dims {
  const s = dims(q, kt, v, o.kvLen ?? kt.shape[0], o.scale);
  const qOff = o.qOffset ?? s.lk - s.lq;
  if (!Number.isInteger(qOff) || qOff < 0 || qOff + s.lq > s.lk) {
    throw new Error(`attention: qOffset ${qOff} with ${s.lq} query rows (q "${q.name}") needs 0 <= qOffset and qOffset + Lq <= kvLen ${s.lk}`);
  }
  return { ...s, qOff, nseg: 0, causal: 1 };
}

function varlenDims(q: Tensor, kt: Tensor, v: Tensor, cu: Tensor, o: VarlenOpts): Dims {
  const s = dims(q, kt, v, kt.shape[0], o.scale);
  if (s.lk !== s.lq) throw new Error(`attention varlen: q "${q.name}" has ${s.lq} rows but k "${kt.name}" has ${s.lk}`);
  if (cu.dtype !== 'i32' || cu.shape.length !== 1 || cu.shape[0] < 1) throw new Error(`attention varlen: cuSeqlens "${cu.name}" must be i32 [S+1], got ${cu.dtype} [${cu.shape}]`);
  if (o.maxSeqlen !== undefined && !(Number.isInteger(o.maxSeqlen) && o.maxSeqlen >= 0)) throw new Error(`attention varlen: maxSeqlen ${o.maxSeqlen} must be a non-negative integer`);
  return { ...s, qOff: 0, nseg: cu.shape[0] - 1, causal: o.causal ? 1 : 0, maxSeqlen: o.maxSeqlen };
}

// Flash workgroups: blocks of 4·FLASH_WG (row, head-of-group) pairs (or keys) per kv head.
const flashGrid = (items: number, s: Dims) => grid(Math.ceil(items / (4 * FLASH_WG)) * s.hkv);

/** flash params: the common ones, the kind and the dS scratch row width in vec4 (0 = none) */
function flashParams(kind: 'causal' | 'varlen', s: Dims, w4 = 0): [number[], string] {
  const [pv, fmt] = params(s);
  return [[...pv, kind === 'varlen' ? 1 : 0, w4], fmt + 'uu'];
}

/** Budget for the backward's dS scratch; past it dq recomputes P and dP instead. */
const DS_SCRATCH_MAX = 64 * 2 ** 20;

function forward(kind: 'causal' | 'varlen', q: Tensor, kt: Tensor, v: Tensor, cu: Tensor | undefined, s: Dims, variant: AttentionVariant): AttnForward {
  const out = empty([s.lq, s.hq, s.d], 'f32', 'attn.out');
  const lse = empty([s.lq, s.hq], 'f32', 'attn.lse');
  if (s.lq === 0) return { out, lse };
  if (variant === 'flash') {
    const [pv, fmt] = flashParams(kind, s);
    dispatch(fk(`flash_fwd_${kind}`, s.d), [q, kt, v, out, lse, cu], flashGrid(s.lq * (s.hq / s.hkv), s), pv, fmt);
  } else {
    const [pv, fmt] = params(s);
    dispatch(k(`attn_fwd_${kind}`, s.d), [q, kt, v, out, lse, cu], grid(Math.ceil((s.lq * s.hq) / WG)), pv, fmt);
  }
  return { out, lse };
}

function backward(kind: 'causal' | 'varlen', q: Tensor, kt: Tensor, v: Tensor, out: Tensor, lse: Tensor, dy: Tensor, cu: Tensor | undefined, s: Dims, variant: AttentionVariant): AttnGrads {
  const want = [s.lq, s.hq, s.d];
  for (const [t, n] of [[out, 'out'], [dy, 'dy']] as const) {
    if (t.shape.join() !== want.join()) throw new Error(`attention backward: ${n} "${t.name}" must be [${want}], got [${t.shape}]`);
  }
  if (lse.numel !== s.lq * s.hq) throw new Error(`attention backward: lse "${lse.name}" must be [${s.lq}, ${s.hq}], got [${lse.shape}]`);
  if (variant === 'flash') return flashBackward(kind, q, kt, v, out, lse, dy, cu, s);
  const [pv, fmt] = params(s);
  const nq = s.lq * s.hq;
  const ld = empty([nq, 2], 'f32', 'attn.lse_delta');
  const u = undefined;
  dispatch(k('attn_bwd_delta', s.d), [u, u, u, u, u, u, dy, ld, u, u, u, u, u, out, lse], grid(Math.ceil(nq / WG)), pv, fmt);
  const dq = empty([s.lq, s.hq, s.d], 'f32', 'attn.dq');
  dispatch(k(`attn_bwd_dq_${kind}`, s.d), [q, kt, v, u, u, cu, dy, ld, dq], grid(Math.ceil(nq / WG)), pv, fmt);
  const grouped = s.hq !== s.hkv;
  const dkh = empty([s.lk, s.hq, s.d], 'f32', grouped ? 'attn.dk_per_head' : 'attn.dk');
  const dvh = empty([s.lk, s.hq, s.d], 'f32', grouped ? 'attn.dv_per_head' : 'attn.dv');
  dispatch(k(`attn_bwd_dkdv_${kind}`, s.d), [q, kt, v, u, u, cu, dy, ld, u, dkh, dvh], grid(Math.ceil((s.lk * s.hq) / WG)), pv, fmt);
  ld.release(); // later dispatches run after this one in the same encoder, so reuse is safe
  if (!grouped) return { dq, dk: dkh, dv: dvh };
  const dk = empty([s.lk, s.hkv, s.d], 'f32', 'attn.dk');
  const dv = empty([s.lk, s.hkv, s.d], 'f32', 'attn.dv');
  const n = (s.lk * s.hkv * s.d) / (s.d % 4 === 0 ? 4 : 1);
  dispatch(k('attn_bwd_group_sum', s.d), [u, u, u, u, u, u, u, u, u, dkh, dvh, dk, dv], grid(Math.ceil(n / WG)), pv, fmt);
  dkh.release();
  dvh.release();
  return { dq, dk, dv };
}

function flashBackward(kind: 'causal' | 'varlen', q: Tensor, kt: Tensor, v: Tensor, out: Tensor, lse: Tensor, dy: Tensor, cu: Tensor | undefined, s: Dims): AttnGrads {
  const nq = s.lq * s.hq;
  const dq = empty([s.lq, s.hq, s.d], 'f32', 'attn.dq');
  const dk = empty([s.lk, s.hkv, s.d], 'f32', 'attn.dk');
  const dv = empty([s.lk, s.hkv, s.d], 'f32', 'attn.dv');
  if (nq === 0 || s.lk === 0) return { dq, dk, dv };
  // dS scratch rows of w4 4-key blocks: causal keys start at 0; a varlen row's keys start in its
  // segment, counted from the segment start rounded down to 4 (so up to maxSeqlen + 3 columns).
  const w4 = kind === 'causal' ? Math.ceil(s.lk / 4) : s.maxSeqlen !== undefined ? Math.floor((s.maxSeqlen + 2) / 4) + 1 : 0;
  const bytes = nq * w4 * 16;
  const useDs = w4 > 0 && bytes <= Math.min(DS_SCRATCH_MAX, gpu().limits.maxStorageBufferBindingSize);
  const [pv, fmt] = flashParams(kind, s, useDs ? w4 : 0);
  const u = undefined;
  const ld = empty([nq, 4], 'f32', 'attn.lse_delta_range');
  dispatch(fk(`flash_bwd_prep_${kind}`, s.d), [u, u, u, u, u, cu, dy, ld, u, u, u, out, lse], grid(Math.ceil(nq / 64)), pv, fmt);
  const ds = empty([useDs ? nq * w4 * 4 : 4], 'f32', 'attn.ds_scratch');
  // one dk/dv share per query head, summed per kv head after (for rep = 1 the share is dk)
  const grouped = s.hq !== s.hkv;
  const dkh = grouped ? empty([s.lk, s.hq, s.d], 'f32', 'attn.dk_per_head') : dk;
  const dvh = grouped ? empty([s.lk, s.hq, s.d], 'f32', 'attn.dv_per_head') : dv;
  dispatch(fk('flash_bwd_dkdv', s.d), [q, kt, v, u, u, u, dy, u, u, dkh, dvh, u, u, ld, ds], grid(Math.ceil(s.lk / (4 * FLASH_WG)) * s.hq), pv, fmt);
  if (grouped) {
    const n = s.lk * s.hkv * (s.d % 4 === 0 ? s.d / 4 : s.d);
    dispatch(fk('flash_bwd_group_sum', s.d), [u, u, u, u, u, u, u, u, u, dk, dv, u, u, u, u, dkh, dvh], grid(Math.ceil(n / 64)), pv, fmt);
    dkh.release();
    dvh.release();
  }
  const pairs = s.lq * (s.hq / s.hkv);
  if (useDs) dispatch(fk('flash_bwd_dq_ds', s.d), [u, kt, v, u, u, u, u, u, dq, u, u, u, u, ld, ds], flashGrid(pairs, s), pv, fmt);
  else dispatch(fk('flash_bwd_dq', s.d), [q, kt, v, u, u, u, dy, u, dq, u, u, u, u, ld], flashGrid(pairs, s), pv, fmt);
  ld.release(); // later dispatches run after these in the same encoder, so reuse is safe
  ds.release();
  return { dq, dk, dv };
}

/**
 * Causal GQA attention. q [Lq,Hq,D]; k, v [cap,Hkv,D] with the first `kvLen` rows valid (a KV cache
 * is read in place). Query row i sits at key position i + qOffset and sees keys 0..i+qOffset.
 */
export function attentionCausal(q: Tensor, kt: Tensor, v: Tensor, opts: CausalOpts = {}): AttnForward {
  return forward('causal', q, kt, v, undefined, causalDims(q, kt, v, opts), opts.variant ?? attentionVariant().fwd);
}

/** Backward of attentionCausal given its inputs, saved out/lse and dy = dL/dout. dk/dv are [kvLen,Hkv,D]. */
export function attentionCausalBackward(q: Tensor, kt: Tensor, v: Tensor, out: Tensor, lse: Tensor, dy: Tensor, opts: CausalOpts = {}): AttnGrads {
  return backward('causal', q, kt, v, out, lse, dy, undefined, causalDims(q, kt, v, opts), opts.variant ?? attentionVariant().bwd);
}

/**
 * Attention inside each segment [cu[s], cu[s+1]) of `cuSeqlens` (i32 [S+1]); non-causal unless
 * opts.causal. q [N,Hq,D], k, v [N,Hkv,D]. Rows outside every segment get out = 0.
 */
export function attentionVarlen(q: Tensor, kt: Tensor, v: Tensor, cuSeqlens: Tensor, opts: VarlenOpts = {}): AttnForward {
  return forward('varlen', q, kt, v, cuSeqlens, varlenDims(q, kt, v, cuSeqlens, opts), opts.variant ?? attentionVariant().fwd);
}

export function attentionVarlenBackward(q: Tensor, kt: Tensor, v: Tensor, out: Tensor, lse: Tensor, dy: Tensor, cuSeqlens: Tensor, opts: VarlenOpts = {}): AttnGrads {
  return backward('varlen', q, kt, v, out, lse, dy, cuSeqlens, varlenDims(q, kt, v, cuSeqlens, opts), opts.variant ?? attentionVariant().bwd);
}
