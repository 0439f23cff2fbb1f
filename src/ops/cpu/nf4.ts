// NF4 (4-bit NormalFloat) quantisation exactly as bitsandbytes defines it, in plain TypeScript.
// Every step mirrors bitsandbytes' pure-PyTorch backend (bitsandbytes/backends/default/ops.py:
// "quantize_4bit", _dequantize_4bit_compute, "quantize_blockwise", _dequantize_blockwise_compute)
// and functional.py (quantize_4bit with compress_statistics, dequantize_4bit, get_4bit_type,
// create_dynamic_map), with every f32 rounding where torch rounds (Math.fround), so codes, absmax
// and dequantised values are bit-identical (tested against scripts/nf4_reference.py's fixtures).
//
// Blocks run over the FLATTENED tensor (row-major), `blocksize` values each; when numel is not a
// multiple of blocksize the last block is the short remainder (it may straddle rows). Two codes per
// byte, the first element of each pair in the HIGH nibble; an odd numel pads one zero (code 7).
//
// Double quantisation (bnb_4bit_use_double_quant / compress_statistics): offset = mean(absmax),
// absmax - offset quantised blockwise (block 256) with the signed 8-bit dynamic map; dequantised
// absmax = dynamic[q8] * nested_absmax[b / 256] + offset.

import { nf4CodeAt, type Nf4Data } from '../../gpu/nf4.ts';
import { gemmCpu } from './matmul.ts';

export type { Nf4Data, Nf4Nested } from '../../gpu/nf4.ts';

/** functional.get_4bit_type('nf4'): create_normal_map(0.9677083) hard-coded, sorted. */
export const NF4_CODE = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
  -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
  0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
  0.7229568362236023, 1.0,
]);

const f = Math.fround;

/**
 * torch.linspace(start, end, steps, dtype=float32) on the CPU: the two halves count from each end,
 * each value one fused multiply-add (one rounding: the f64 product of an f32 step and a small
 * integer is exact).
 */
function linspaceF32(start: number, end: number, steps: number): number[] {
  const s = f(start), e = f(end), step = f(f(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  return Array.from({ length: steps }, (_, i) => (i < half ? f(s + step * i) : f(e - step * (steps - i - 1))));
}

/** functional.create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): 256 sorted values. */
export function createDynamicMap(): Float32Array {
  const data: number[] = [];
  const maxExp = 7, nonSign = 7;
  for (let i = 0; i < maxExp; i++) {
    const items = 2 ** (i + nonSign - maxExp) + 1;
    const b = linspaceF32(0.1, 1, items);
    const scale = f(10 ** (-(maxExp - 1) + i)); // the Python float becomes an f32 scalar
    for (let j = 0; j + 1 < b.length; j++) {
      const mean = f(f(b[j] + b[j + 1]) / 2);
      data.push(f(scale * mean));
      data.push(f(-scale * mean));
    }
  }
  // additional_items = 2^(7-7) - 1 = 0: none
  data.push(0, 1);
  while (data.length < 256) data.push(0);
  return Float32Array.from(data.sort((a, b) => a - b));
}

/** The 8-bit map of the nested (double-quantised) absmax. */
export const DYNAMIC_MAP = createDynamicMap();

/** Midpoints between neighbouring code values, f32 as torch computes (code[:-1] + code[1:]) / 2. */
function bounds(code: Float32Array): Float32Array {
  const b = new Float32Array(code.length - 1);
  for (let i = 0; i < b.length; i++) b[i] = f(f(code[i] + code[i + 1]) / 2);
  return b;
}
const NF4_BOUNDS = bounds(NF4_CODE);
const DYNAMIC_BOUNDS = bounds(DYNAMIC_MAP);

/** torch.bucketize(v, bounds, right=False): the number of bounds strictly below v. */
function bucket(v: number, b: Float32Array): number {
  let lo = 0, hi = b.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (b[mid] < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const TINY = f(1e-38); // absmax.clamp(min=1e-38): an all-zero block divides by this, stores 0

/**
 * The shared block loop of ops.py quantize_4bit / quantize_blockwise: absmax per block, and each
 * value scaled to [-1, 1] — full blocks multiply by the f32 reciprocal, the remainder block
 * divides (torch does exactly that), then bucketized against `b`.
 */
function quantBlocks(x: ArrayLike<number>, blocksize: number, b: Float32Array, put: (i: number, q: number) => void): Float32Array {
  const n = x.length, nb = Math.ceil(n / blocksize), full = Math.floor(n / blocksize);
  const absmax = new Float32Array(nb);
  for (let blk = 0; blk < nb; blk++) {
    const i0 = blk * blocksize, i1 = Math.min(n, i0 + blocksize);
    let am = 0;
    for (let i = i0; i < i1; i++) am = Math.max(am, Math.abs(x[i]));
    absmax[blk] = am;
    const den = Math.max(am, TINY);
    if (blk < full) {
      const r = f(1 / den);
      for (let i = i0; i < i1; i++) put(i, bucket(Math.min(1, Math.max(-1, f(x[i] * r))), b));
    } else {
      for (let i = i0; i < i1; i++) put(i, bucket(Math.min(1, Math.max(-1, f(x[i] / den))), b));
    }
  }
  return absmax;
}

export function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Blocks of a tensor of `numel` values. */
export function nf4Blocks(numel: number, blocksize = 64): number {
  return Math.ceil(numel / blocksize);
}

/** quantize_blockwise(A, code=dynamic, blocksize) (ops.py), for the nested absmax. */
export function quantizeBlockwise(x: Float32Array, blocksize = 256, code = DYNAMIC_MAP): { q: Uint8Array; absmax: Float32Array } {
  const q = new Uint8Array(x.length);
  const b = code === DYNAMIC_MAP ? DYNAMIC_BOUNDS : bounds(code);
  const absmax = quantBlocks(x, blocksize, b, (i, v) => { q[i] = v; });
  return { q, absmax };
}

/** _dequantize_blockwise_compute: f32 code[q] * absmax[i / blocksize]. */
export function dequantizeBlockwise(q: Uint8Array, absmax: Float32Array, code: Float32Array, blocksize: number): Float32Array {
  const out = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) out[i] = f(code[q[i]] * absmax[Math.floor(i / blocksize)]);
  return out;
}

/** f32 mean as torch's float32 .mean() of a few thousand values gives it (an f64 sum, rounded). */
function meanF32(x: Float32Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i];
  return f(s / x.length);
}

/**
 * functional.quantize_4bit(x, blocksize, compress_statistics=doubleQuant, quant_type='nf4').
 * `x` holds the tensor's values (BF16 / F16 values widened to f32 exactly, as torch's .float()).
 */
export function quantizeNf4(x: ArrayLike<number>, shape: number[], opts: { blocksize?: number; doubleQuant?: boolean; dtype?: Nf4Data['dtype'] } = {}): Nf4Data {
  const blocksize = opts.blocksize ?? 64;
  const n = x.length;
  if (n !== numelOf(shape)) throw new Error(`quantizeNf4: ${n} values for shape [${shape}]`);
  const packed = new Uint8Array((n + 1) >> 1);
  // an odd numel pads one 0.0, which bucketizes to code 7 (the zero of the map)
  if (n & 1) packed[packed.length - 1] = 7;
  const absmax = quantBlocks(x, blocksize, NF4_BOUNDS, (i, q) => { packed[i >> 1] |= i & 1 ? q : q << 4; });
  const base: Omit<Nf4Data, 'absmax'> = { shape: [...shape], packed, blocksize, code: NF4_CODE, dtype: opts.dtype ?? 'bfloat16' };
  if (!opts.doubleQuant) return { ...base, absmax };
  const offset = meanF32(absmax);
  const centred = new Float32Array(absmax.length);
  for (let i = 0; i < absmax.length; i++) centred[i] = f(absmax[i] - offset);
  const nq = quantizeBlockwise(centred, 256);
  return { ...base, absmax: new Float32Array(0), nested: { q: nq.q, absmax: nq.absmax, offset, code: DYNAMIC_MAP, blocksize: 256 } };
}

/** The f32 absmax per 4-bit block (double quant undone as dequantize_4bit does). */
export function nf4Absmax(d: Nf4Data): Float32Array {
  if (!d.nested) return d.absmax;
  const a = dequantizeBlockwise(d.nested.q, d.nested.absmax, d.nested.code, d.nested.blocksize);
  for (let i = 0; i < a.length; i++) a[i] = f(a[i] + d.nested.offset);
  return a;
}

/** f32 -> the nearest bf16 value (round to nearest even), as an f32. */
export function roundBf16(v: number): number {
  const u = new Uint32Array(new Float32Array([v]).buffer)[0];
  if ((u & 0x7f800000) === 0x7f800000) return v;
  return new Float32Array(new Uint32Array([((u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000) >>> 0]).buffer)[0];
}

/** f32 -> nearest f16 value, as an f32 (torch's .to(float16): round to nearest even). */
export function roundF16(v: number): number {
  const m = (Math as unknown as { f16round?: (x: number) => number }).f16round; // ES2025
  if (m) return m(v);
  const a = Math.abs(v);
  if (a >= 65520) return v > 0 ? Infinity : -Infinity;
  const e = a < 2 ** -14 ? -14 : Math.floor(Math.log2(a));
  const ulp = 2 ** (e - 10);
  const q = a / ulp, r = Math.floor(q), frac = q - r;
  const k = frac > 0.5 || (frac === 0.5 && r % 2 === 1) ? r + 1 : r;
  return Math.sign(v) * k * ulp;
}

/**
 * functional.dequantize_4bit: f32 code[q] * absmax[i / blocksize], rounded to `dtype`
 * (default the state's dtype; 'float32' gives the unrounded products).
 */
export function dequantizeNf4(d: Nf4Data, dtype: Nf4Data['dtype'] = d.dtype): Float32Array {
  const n = numelOf(d.shape), am = nf4Absmax(d), out = new Float32Array(n);
  const round = dtype === 'bfloat16' ? roundBf16 : dtype === 'float16' ? roundF16 : f;
  for (let i = 0; i < n; i++) out[i] = round(f(d.code[nf4CodeAt(d.packed, i)] * am[Math.floor(i / d.blocksize)]));
  return out;
}

/**
 * y[M,N] = x[M,K]·Wᵀ (+ b) with W = dequantizeNf4(w) [N, K] (the kernels' reference: the same
 * dequantised values, f64 accumulation). `rowOffset` uses rows [r0, r0 + N) of a taller weight.
 */
export function matmulNf4Cpu(x: Float32Array, w: Nf4Data, M: number, opts: { bias?: Float32Array; rows?: [number, number] } = {}): Float32Array {
  const [N0, K] = w.shape;
  const [r0, N] = opts.rows ?? [0, N0];
  const W = dequantizeNf4(w).subarray(r0 * K, (r0 + N) * K);
  return gemmCpu(x, W, M, N, K, { transB: true, bias: opts.bias });
}

/** dx[M,K] = dy[M,N]·W with W = dequantizeNf4(w) [N, K]. */
export function matmulNf4BackwardInputCpu(dy: Float32Array, w: Nf4Data, M: number, opts: { rows?: [number, number] } = {}): Float32Array {
  const [N0, K] = w.shape;
  const [r0, N] = opts.rows ?? [0, N0];
  const W = dequantizeNf4(w).subarray(r0 * K, (r0 + N) * K);
  return gemmCpu(dy, W, M, K, N);
}
