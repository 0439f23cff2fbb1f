// Attention ops: causal GQA (text decoder, prefill and KV-cache decoding) and varlen attention over
// cu_seqlens segments (vision window / full attention). Forward returns the per-(row, head)
// logsumexp that the backward needs; backward recomputes the probabilities from it.
import code from '../../shaders/attention.wgsl?raw';
import { dispatch, grid, kernel, type Kernel } from '../gpu/kernel.ts';
import { empty, type Tensor } from '../gpu/tensor.ts';

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
}

export interface VarlenOpts {
  /** default 1/sqrt(D) */
  scale?: number;
  /** also mask keys after the query inside each segment (packed causal sequences); default false */
  causal?: boolean;
}

interface Dims { lq: number; lk: number; hq: number; hkv: number; d: number; scale: number; qOff: number; nseg: number; causal: number }

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
  return { ...s, qOff: 0, nseg: cu.shape[0] - 1, causal: o.causal ? 1 : 0 };
}

function forward(kind: 'causal' | 'varlen', q: Tensor, kt: Tensor, v: Tensor, cu: Tensor | undefined, s: Dims): AttnForward {
  const out = empty([s.lq, s.hq, s.d], 'f32', 'attn.out');
  const lse = empty([s.lq, s.hq], 'f32', 'attn.lse');
  const [pv, fmt] = params(s);
  dispatch(k(`attn_fwd_${kind}`, s.d), [q, kt, v, out, lse, cu], grid(Math.ceil((s.lq * s.hq) / WG)), pv, fmt);
  return { out, lse };
}

function backward(kind: 'causal' | 'varlen', q: Tensor, kt: Tensor, v: Tensor, out: Tensor, lse: Tensor, dy: Tensor, cu: Tensor | undefined, s: Dims): AttnGrads {
  const want = [s.lq, s.hq, s.d];
  for (const [t, n] of [[out, 'out'], [dy, 'dy']] as const) {
    if (t.shape.join() !== want.join()) throw new Error(`attention backward: ${n} "${t.name}" must be [${want}], got [${t.shape}]`);
  }
  if (lse.numel !== s.lq * s.hq) throw new Error(`attention backward: lse "${lse.name}" must be [${s.lq}, ${s.hq}], got [${lse.shape}]`);
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

/**
 * Causal GQA attention. q [Lq,Hq,D]; k, v [cap,Hkv,D] with the first `kvLen` rows valid (a KV cache
 * is read in place). Query row i sits at key position i + qOffset and sees keys 0..i+qOffset.
 */
export function attentionCausal(q: Tensor, kt: Tensor, v: Tensor, opts: CausalOpts = {}): AttnForward {
  return forward('causal', q, kt, v, undefined, causalDims(q, kt, v, opts));
}

/** Backward of attentionCausal given its inputs, saved out/lse and dy = dL/dout. dk/dv are [kvLen,Hkv,D]. */
export function attentionCausalBackward(q: Tensor, kt: Tensor, v: Tensor, out: Tensor, lse: Tensor, dy: Tensor, opts: CausalOpts = {}): AttnGrads {
  return backward('causal', q, kt, v, out, lse, dy, undefined, causalDims(q, kt, v, opts));
}

/**
 * Attention inside each segment [cu[s], cu[s+1]) of `cuSeqlens` (i32 [S+1]); non-causal unless
 * opts.causal. q [N,Hq,D], k, v [N,Hkv,D]. Rows outside every segment get out = 0.
 */
export function attentionVarlen(q: Tensor, kt: Tensor, v: Tensor, cuSeqlens: Tensor, opts: VarlenOpts = {}): AttnForward {
  return forward('varlen', q, kt, v, cuSeqlens, varlenDims(q, kt, v, cuSeqlens, opts));
}

export function attentionVarlenBackward(q: Tensor, kt: Tensor, v: Tensor, out: Tensor, lse: Tensor, dy: Tensor, cuSeqlens: Tensor, opts: VarlenOpts = {}): AttnGrads {
  return backward('varlen', q, kt, v, out, lse, dy, cuSeqlens, varlenDims(q, kt, v, cuSeqlens, opts));
}
