// Matmul: y = x·Wᵀ (+ b) with W f32 or packed bf16, and its backward dx = dy·W, dW = dyᵀ·x.
// All are one strided GEMM, C = alpha·op(A)·op(B) + beta·C (+ bias), in shaders/matmul.wgsl.
//
// Two kernel families, chosen per adapter: 'reg' (register-blocked, no workgroup memory, vec4
// loads when the dims allow; fastest on SwiftShader) and 'tiled' (64x64 tiles through workgroup
// memory; for real GPUs). tuneMatmul() times both once per adapter and remembers the winner
// (module map + localStorage); setMatmulVariant() or PATCHWORK_MATMUL=reg|tiled override it.
import code from '../../shaders/matmul.wgsl?raw';
import { dispatch, flush, kernel, type Kernel } from '../gpu/kernel.ts';
import { gpu, GpuError } from '../gpu/device.ts';
import { empty, fromData, read, type Tensor } from '../gpu/tensor.ts';

export type MatmulVariant = 'reg' | 'tiled';

const FILE = 'matmul.wgsl';
/**
 * Register kernels: WG threads of 4x4 outputs, TX of them along n. Small products take 16-thread
 * workgroups (a 16x16 block) so that even 46 rows spread over every core.
 */
const REG = { big: { WG: 64, TX: 16 }, small: { WG: 16, TX: 4 } };
const kernels = new Map<string, Kernel>();
function k(entry: string, bf16: boolean, shape: { WG: number; TX: number } = REG.big): Kernel {
  const key = `${entry}|${bf16}|${shape.WG}|${shape.TX}`;
  let kk = kernels.get(key);
  if (!kk) kernels.set(key, (kk = kernel(FILE, code, entry, entry === 'tiled' ? { BF16: bf16 ? 1 : 0 } : { BF16: bf16 ? 1 : 0, ...shape })));
  return kk;
}

// ---- variant choice ---------------------------------------------------------------------------

const tuned = new Map<string, MatmulVariant>();
let forced: MatmulVariant | undefined;
const LS_KEY = 'patchwork.matmulVariant:';

function envVariant(): MatmulVariant | undefined {
  const v = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.PATCHWORK_MATMUL;
  return v === 'reg' || v === 'tiled' ? v : undefined;
}

function storage(): Storage | undefined {
  try {
    return (globalThis as { localStorage?: Storage }).localStorage;
  } catch {
    return undefined;
  }
}

/** Force a variant for every later matmul (undefined = back to the tuned/default choice). */
export function setMatmulVariant(v: MatmulVariant | undefined): void {
  forced = v;
}

/** The variant matmuls use now: override, else the tuned choice for this adapter, else a guess. */
export function matmulVariant(): MatmulVariant {
  const f = forced ?? envVariant();
  if (f) return f;
  const name = gpu().adapterName;
  let v = tuned.get(name);
  if (!v) {
    const s = storage()?.getItem(LS_KEY + name);
    if (s === 'reg' || s === 'tiled') tuned.set(name, (v = s));
  }
  return v ?? defaultVariant(name);
}

/** Untuned: CPU adapters (SwiftShader, llvmpipe, WARP) hate barriers; real GPUs like workgroup memory. */
function defaultVariant(adapterName: string): MatmulVariant {
  return /swiftshader|llvmpipe|lavapipe|warp|cpu/i.test(adapterName) ? 'reg' : 'tiled';
}

export interface TuneResult { adapterName: string; variant: MatmulVariant; ms: Record<MatmulVariant, number> }

/**
 * Time both variants on a representative shape (default 256×512×512, y = x·Wᵀ with bf16 W,
 * the common case) and remember the faster for this adapter. Call once after device creation;
 * later calls return the cached answer unless `force`.
 */
export async function tuneMatmul(opts: { m?: number; n?: number; k?: number; reps?: number; force?: boolean } = {}): Promise<TuneResult> {
  const { m = 256, n = 512, k: kd = 512, reps = 3 } = opts;
  const name = gpu().adapterName;
  const ms = { reg: Infinity, tiled: Infinity } as Record<MatmulVariant, number>;
  if (!opts.force && tuned.has(name)) return { adapterName: name, variant: tuned.get(name)!, ms };
  const rnd = (len: number) => Float32Array.from({ length: len }, (_, i) => Math.sin(i * 12.9898) * 0.5);
  const x = fromData(rnd(m * kd), [m, kd], 'f32', 'tune.x');
  const w = fromData(rnd(n * kd), [n, kd], 'bf16', 'tune.w');
  const y = empty([m, n], 'f32', 'tune.y');
  const variants: MatmulVariant[] = ['reg', 'tiled'];
  for (const v of variants) { matmul(x, w, { out: y, variant: v }); await read(y); } // compile + warm
  for (let r = 0; r < reps; r++) {
    for (const v of variants) {
      const t0 = performance.now();
      matmul(x, w, { out: y, variant: v });
      flush();
      await gpu().device.queue.onSubmittedWorkDone();
      ms[v] = Math.min(ms[v], performance.now() - t0);
    }
  }
  for (const t of [x, w, y]) t.release();
  // Timings on a shared machine are noisy: leave the adapter-class default unless the other
  // variant is clearly (15%) faster.
  const guess = defaultVariant(name), other: MatmulVariant = guess === 'reg' ? 'tiled' : 'reg';
  const variant = ms[other] < 0.85 * ms[guess] ? other : guess;
  tuned.set(name, variant);
  try { storage()?.setItem(LS_KEY + name, variant); } catch { /* storage full or denied */ }
  return { adapterName: name, variant, ms };
}

// ---- call log (the bench replays a step's products to measure its matmul rate) ----------------

export interface GemmCall { M: number; N: number; K: number; batch: number; transA: boolean; transB: boolean; bf16: boolean; accumulate: boolean; bias: boolean; count: number }
let gemmLog: Map<string, GemmCall> | undefined;

/** Start counting every gemm by shape (until takeGemms). */
export function recordGemms(): void {
  gemmLog = new Map();
}

/** The distinct gemms since recordGemms, with how often each ran; stops recording. */
export function takeGemms(): GemmCall[] {
  const out = [...(gemmLog?.values() ?? [])];
  gemmLog = undefined;
  return out;
}

export const gemmFlops = (c: GemmCall) => 2 * c.batch * c.M * c.N * c.K * c.count;

// ---- general strided GEMM ---------------------------------------------------------------------

export interface GemmOptions {
  /** A is stored [K, M] (use its transpose) instead of [M, K] */
  transA?: boolean;
  /** B is stored [N, K] (use its transpose) instead of [K, N] */
  transB?: boolean;
  /** C = alpha · op(A)·op(B) (default 1) */
  alpha?: number;
  /** add into `out` instead of overwriting it (beta = 1): gradient accumulation for free */
  accumulate?: boolean;
  /** [N], added to every row (f32) */
  bias?: Tensor;
  /** write here (shape [M, N] or [batch, M, N]; any shape with that many elements) */
  out?: Tensor;
  name?: string;
  variant?: MatmulVariant;
}

function dims(t: Tensor, what: string): [number, number, number] {
  const s = t.shape;
  if (s.length === 2) return [1, s[0], s[1]];
  if (s.length === 3) return [s[0], s[1], s[2]];
  throw new GpuError(`gemm: ${what} "${t.name}" must be 2-D or 3-D (batched), got [${s}]`);
}

/**
 * C = alpha · op(A) · op(B) (+ bias) (+ C when accumulate). A: [M,K] (or [K,M] with transA),
 * B: [K,N] (or [N,K] with transB), f32 or (B only) bf16. 3-D A is a batch; B may be 2-D (shared
 * by every batch) or 3-D with the same batch. Returns C [M,N] or [batch,M,N].
 */
export function gemm(a: Tensor, b: Tensor, opts: GemmOptions = {}): Tensor {
  const { transA = false, transB = false, alpha = 1, accumulate = false, bias } = opts;
  const [ba, ra, ca] = dims(a, 'A');
  const [bb, rb, cb] = dims(b, 'B');
  const [M, K] = transA ? [ca, ra] : [ra, ca];
  const [Kb, N] = transB ? [cb, rb] : [rb, cb];
  const name = opts.name ?? `${a.name}@${b.name}`;
  if (K !== Kb) throw new GpuError(`gemm ${name}: inner sizes differ: A "${a.name}" [${a.shape}]${transA ? 'ᵀ' : ''} gives K=${K}, B "${b.name}" [${b.shape}]${transB ? 'ᵀ' : ''} gives K=${Kb}`);
  if (bb !== 1 && bb !== ba) throw new GpuError(`gemm ${name}: batch of B "${b.name}" [${b.shape}] must be 1 or match A "${a.name}" [${a.shape}]`);
  if (a.dtype !== 'f32') throw new GpuError(`gemm ${name}: A "${a.name}" must be f32, got ${a.dtype}`);
  if (b.dtype !== 'f32' && b.dtype !== 'bf16') throw new GpuError(`gemm ${name}: B "${b.name}" must be f32 or bf16, got ${b.dtype}`);
  if (bias && (bias.numel !== N || bias.dtype !== 'f32')) throw new GpuError(`gemm ${name}: bias "${bias.name}" must be f32 [${N}], got ${bias.dtype} [${bias.shape}]`);
  const batch = ba;
  const outShape = batch > 1 || a.shape.length === 3 ? [batch, M, N] : [M, N];
  let out = opts.out;
  if (out) {
    if (out.numel !== batch * M * N || out.dtype !== 'f32') throw new GpuError(`gemm ${name}: out "${out.name}" must be f32 with ${batch * M * N} elements [${outShape}], got ${out.dtype} [${out.shape}]`);
    if (out.buffer === a.buffer || out.buffer === b.buffer) throw new GpuError(`gemm ${name}: out "${out.name}" aliases an input`);
  } else {
    if (accumulate) throw new GpuError(`gemm ${name}: accumulate needs an existing out tensor`);
    out = empty(outShape, 'f32', name);
  }
  if (batch * M * N === 0) return out;
  const bf16 = b.dtype === 'bf16';
  if (gemmLog) {
    const call = { M, N, K, batch, transA, transB, bf16, accumulate, bias: !!bias };
    const key = JSON.stringify(call);
    const c = gemmLog.get(key);
    if (c) c.count++;
    else gemmLog.set(key, { ...call, count: 1 });
  }
  const sab = M * K, sbb = bb === 1 ? 0 : K * N, scb = M * N;
  const [sam, sak] = transA ? [1, M] : [K, 1];
  const [sbk, sbn] = transB ? [1, K] : [N, 1];
  const flags = (bias ? 1 : 0) | (accumulate ? 2 : 0);
  const params = [M, N, K, flags, alpha, accumulate ? 1 : 0, sam, sak, sbk, sbn, sab, sbb, scb];
  const fmt = 'uuuuffuuuuuuu';
  const variant = opts.variant ?? matmulVariant();
  const biasT = bias ?? a.buffer; // unused when flags say no bias: any read-only buffer will do
  const bAll = b.buffer; // whole buffer for the view the dtype does not use (>= 256 B, so any view fits)
  if (variant === 'tiled') {
    const ty = Math.ceil(M / 64), tx = Math.ceil(N / 64);
    dispatch(k('tiled', bf16), [a, undefined, bf16 ? bAll : b, undefined, bf16 ? b : bAll, undefined, biasT, out], [tx, ty, batch], params, fmt);
    return out;
  }
  // vec4 kernels need the vectorised dims (and batch offsets) to be multiples of 4
  const al4 = (...xs: number[]) => xs.every((x) => x % 4 === 0);
  let entry = 'gen';
  if (!transA && transB && al4(K, sab, sbb)) entry = 'nt4';
  else if (!transA && !transB && al4(K, N, sab, sbb)) entry = 'nn4';
  else if (transA && !transB && al4(M, N, sab, sbb)) entry = 'tn4';
  const blocks = (s: { WG: number; TX: number }) => [Math.ceil(N / (4 * s.TX)), Math.ceil(M / (4 * (s.WG / s.TX)))];
  const [bx, by] = blocks(REG.big);
  const shape = bx * by * batch < 16 ? REG.small : REG.big;
  const grid: [number, number, number] = [...blocks(shape), batch] as [number, number, number];
  if (entry === 'gen') {
    dispatch(k('gen', bf16, shape), [a, undefined, bf16 ? bAll : b, undefined, bf16 ? b : bAll, undefined, biasT, out], grid, params, fmt);
  } else {
    dispatch(k(entry, bf16, shape), [undefined, a, undefined, bf16 ? bAll : b, undefined, bf16 ? b : bAll, biasT, out], grid, params, fmt);
  }
  return out;
}

// ---- linear layer ---------------------------------------------------------------------------

function rows(t: Tensor, last: number, what: string, op: string): number {
  const s = t.shape;
  if (!s.length || s[s.length - 1] !== last) throw new GpuError(`${op}: ${what} "${t.name}" [${s}] must end in ${last}`);
  return t.numel / last;
}

function weightDims(w: Tensor, op: string): [number, number] {
  if (w.shape.length !== 2) throw new GpuError(`${op}: weight "${w.name}" must be [out, in], got [${w.shape}]`);
  return [w.shape[0], w.shape[1]];
}

export interface LinearOptions {
  bias?: Tensor;
  out?: Tensor;
  /** y += … instead of y = … */
  accumulate?: boolean;
  alpha?: number;
  name?: string;
  variant?: MatmulVariant;
}

/** y = x·Wᵀ (+ b). x [..., K] f32, W [N, K] f32 or bf16, b [N] → y [..., N]. */
export function matmul(x: Tensor, w: Tensor, opts: LinearOptions = {}): Tensor {
  const [N, K] = weightDims(w, 'matmul');
  const M = rows(x, K, 'x', `matmul (weight "${w.name}" [${w.shape}])`);
  const shape = [...x.shape.slice(0, -1), N];
  const out = opts.out ?? (opts.accumulate ? undefined : empty(shape, 'f32', opts.name ?? `${w.name}.out`));
  gemm(x.view([M, K]), w, { ...opts, transB: true, out: out?.view([M, N]) });
  return out!;
}

/** dx = dy·W (+= with accumulate). dy [..., N], W [N, K] f32 or bf16 → dx [..., K]. */
export function matmulBackwardInput(dy: Tensor, w: Tensor, opts: Omit<LinearOptions, 'bias'> = {}): Tensor {
  const [N, K] = weightDims(w, 'matmulBackwardInput');
  const M = rows(dy, N, 'dy', `matmulBackwardInput (weight "${w.name}" [${w.shape}])`);
  const shape = [...dy.shape.slice(0, -1), K];
  const out = opts.out ?? (opts.accumulate ? undefined : empty(shape, 'f32', opts.name ?? `${w.name}.dx`));
  gemm(dy.view([M, N]), w, { ...opts, out: out?.view([M, K]) });
  return out!;
}

/**
 * dW = alpha·dyᵀ·x, [N, K] f32; with accumulate, dW += … into `out` (gradient accumulation).
 * dy [..., N], x [..., K] with the same leading size.
 */
export function matmulBackwardWeight(dy: Tensor, x: Tensor, opts: Omit<LinearOptions, 'bias'> = {}): Tensor {
  const N = dy.shape[dy.shape.length - 1], K = x.shape[x.shape.length - 1];
  const M = dy.numel / N;
  if (x.numel / K !== M) throw new GpuError(`matmulBackwardWeight: dy "${dy.name}" [${dy.shape}] and x "${x.name}" [${x.shape}] have different row counts`);
  const out = opts.out ?? (opts.accumulate ? undefined : empty([N, K], 'f32', opts.name ?? `${dy.name}.dW`));
  gemm(dy.view([M, N]), x.view([M, K]), { ...opts, transA: true, out: out?.view([N, K]) });
  return out!;
}

/** dbias = Σ_rows dy, as a [N] tensor: a 1×M by M×N matmul with a ones vector. */
export function biasGrad(dy: Tensor, ones: Tensor, opts: { out?: Tensor; accumulate?: boolean } = {}): Tensor {
  const N = dy.shape[dy.shape.length - 1], M = dy.numel / N;
  if (ones.numel !== M) throw new GpuError(`biasGrad: ones "${ones.name}" needs ${M} elements, got ${ones.numel}`);
  const out = opts.out ?? (opts.accumulate ? undefined : empty([N], 'f32', `${dy.name}.dbias`));
  gemm(ones.view([1, M]), dy.view([M, N]), { out: out?.view([1, N]), accumulate: opts.accumulate });
  return out!;
}
