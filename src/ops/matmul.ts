// Matmul: y = x·Wᵀ (+ b) with W f32 or packed bf16, and its backward dx = dy·W, dW = dyᵀ·x.
// All are one strided GEMM, C = alpha·op(A)·op(B) + beta·C (+ bias), in shaders/matmul.wgsl.
//
// Two kernel families, chosen per adapter: 'reg' (register-blocked, no workgroup memory, vec4
// loads when the dims allow; fastest on SwiftShader) and 'tiled' (64x64 tiles through workgroup
// memory; for real GPUs). tuneMatmul() times both once per adapter and remembers the winner
// (module map + localStorage); setMatmulVariant() or PATCHWORK_MATMUL=reg|tiled override it.
//
// Feature variants (shaders/matmul.wgsl below its "==== variant" lines), each active only after
// the startup self-test (src/gpu/selftest.ts) matched it against the f32 path on this adapter:
//   matmul.subgroup-splitk  (subgroups)   nt_sg: y = x·Wᵀ for M ≤ 8 rows (decode), split-K with subgroupAdd
//   matmul.tiled-f16        (shader-f16)  tiled_h: f16 workgroup tiles, f32 accumulation; only for
//                                         the frozen base's forward (bf16 W, no accumulate), tiled variant
import file from '../../shaders/matmul.wgsl?raw';
import { compileChecked, dispatch, flush, kernel, type Kernel } from '../gpu/kernel.ts';
import { gpu, GpuError } from '../gpu/device.ts';
import { registerVariant, variantActive } from '../gpu/selftest.ts';
import { empty, fromData, read, type Tensor } from '../gpu/tensor.ts';

export type MatmulVariant = 'reg' | 'tiled';
/** force a feature kernel ('none' = the f32 kernels only); default: whatever the self-test activated */
export type MatmulFeature = 'none' | 'subgroup' | 'f16';

/** The shader split into the f32 module and one module per feature variant (its `enable` first). */
export function splitVariants(text: string): { base: string; variants: Record<string, string> } {
  const parts = text.split(/^(?=\/\/ ==== variant: )/m);
  const variants: Record<string, string> = {};
  for (const part of parts.slice(1)) {
    const name = /^\/\/ ==== variant: (\w+)/.exec(part)![1];
    variants[name] = part;
  }
  return { base: parts[0], variants };
}
const split = splitVariants(file);
const code = split.base;
const SG_CODE = `enable subgroups;\n${code}${split.variants.subgroups}`;
const F16_CODE = `enable f16;\n${code}${split.variants.f16}`;
const SG = 'matmul.subgroup-splitk', F16 = 'matmul.tiled-f16';

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
  if (!kk) {
    const [src, name] = entry === 'nt_sg' ? [SG_CODE, `${FILE} (subgroups)`] : entry === 'tiled_h' ? [F16_CODE, `${FILE} (f16)`] : [code, FILE];
    const consts = entry === 'tiled' || entry === 'tiled_h' || entry === 'nt_sg' ? { BF16: bf16 ? 1 : 0 } : { BF16: bf16 ? 1 : 0, ...shape };
    kernels.set(key, (kk = kernel(name, src, entry, consts)));
  }
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

/** PATCHWORK_FEATURE=subgroup|f16|none forces a feature kernel wherever it applies (parity runs with each variant forced). */
function envFeature(): MatmulFeature | undefined {
  const v = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.PATCHWORK_FEATURE;
  return v === 'subgroup' || v === 'f16' || v === 'none' ? v : undefined;
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
  feature?: MatmulFeature;
}

export interface KernelChoice {
  entry: 'nt4' | 'nn4' | 'tn4' | 'gen' | 'tiled' | 'nt_sg' | 'tiled_h';
}

/**
 * Which entry point computes this product: a feature kernel when it is active (or forced) and
 * the product is one it serves, else the variant's f32 kernel. Pure, so tests can pass any
 * `active` set (a fake adapter) and see the choice.
 */
export function pickKernel(o: { M: number; N: number; K: number; transA: boolean; transB: boolean; bf16: boolean; accumulate: boolean; sab: number; sbb: number; variant: MatmulVariant; active: (name: string) => boolean; feature?: MatmulFeature }): KernelChoice['entry'] {
  const al4 = (...xs: number[]) => xs.every((x) => x % 4 === 0);
  const f = o.feature;
  const sgOk = !o.transA && o.transB && al4(o.K, o.sab, o.sbb);
  if (f === 'subgroup' || (f === undefined && o.active(SG))) {
    if (sgOk && (f === 'subgroup' || (o.M <= 4 && o.K >= 256))) return 'nt_sg';
  }
  if (f === 'f16' || (f === undefined && o.variant === 'tiled' && o.active(F16))) {
    if (!o.transA && o.transB && o.bf16 && !o.accumulate) return 'tiled_h';
  }
  if (o.variant === 'tiled') return 'tiled';
  if (!o.transA && o.transB && al4(o.K, o.sab, o.sbb)) return 'nt4';
  if (!o.transA && !o.transB && al4(o.K, o.N, o.sab, o.sbb)) return 'nn4';
  if (o.transA && !o.transB && al4(o.M, o.N, o.sab, o.sbb)) return 'tn4';
  return 'gen';
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
  // vec4 kernels need the vectorised dims (and batch offsets) to be multiples of 4
  const entry = pickKernel({ M, N, K, transA, transB, bf16, accumulate, sab, sbb, variant, active: variantActive, feature: opts.feature ?? envFeature() });
  if (entry === 'tiled' || entry === 'tiled_h') {
    const ty = Math.ceil(M / 64), tx = Math.ceil(N / 64);
    dispatch(k(entry, bf16), [a, undefined, bf16 ? bAll : b, undefined, bf16 ? b : bAll, undefined, biasT, out], [tx, ty, batch], params, fmt);
    return out;
  }
  if (entry === 'nt_sg') {
    dispatch(k('nt_sg', bf16), [undefined, a, undefined, bf16 ? bAll : b, undefined, bf16 ? b : bAll, biasT, out], [Math.ceil(N / 4), M, batch], params, fmt);
    return out;
  }
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
  feature?: MatmulFeature;
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

// ---- self-test candidates ---------------------------------------------------------------------

function lcg(n: number, seed: number, scale: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return ((s / 2 ** 32) * 2 - 1) * scale;
  });
}

/**
 * Run y = x·Wᵀ (+ bias) with `feature` and with the f32 kernels on the same inputs; worst
 * |difference| and the tolerance for that feature. Odd N (partial 4-column blocks) and M, bf16
 * weights, bias on. Tolerances: subgroups reorder an f32 sum, so |err| ≤ K·2⁻²²·max|x|·max|w|
 * (4 ulps per term); f16 tiles round x and w to 11 bits and add 4 terms in f16, so
 * |err| ≤ 4·√K·2⁻¹⁰·max|x|·max|w| (about 10× the expected random-walk error).
 */
export async function checkMatmulFeature(feature: Exclude<MatmulFeature, 'none'>): Promise<{ maxErr: number; tol: number }> {
  await compileChecked(k(feature === 'subgroup' ? 'nt_sg' : 'tiled_h', true)); // a clear compile error, not a later invalid-pipeline one
  const [M, N, K] = feature === 'subgroup' ? [5, 37, 516] : [67, 45, 132];
  const sx = 1, sw = 0.1;
  const xv = lcg(M * K, 11, sx), wv = lcg(N * K, 12, sw), bv = lcg(N, 13, 0.5);
  const x = fromData(xv, [M, K], 'f32', 'selftest.x'), w = fromData(wv, [N, K], 'bf16', 'selftest.w'), b = fromData(bv, [N], 'f32', 'selftest.b');
  try {
    const ref = matmul(x, w, { bias: b, feature: 'none', variant: feature === 'f16' ? 'tiled' : 'reg', name: 'selftest.ref' });
    const got = matmul(x, w, { bias: b, feature, variant: feature === 'f16' ? 'tiled' : 'reg', name: 'selftest.got' });
    const [r, g] = [await read(ref), await read(got)];
    ref.release();
    got.release();
    let maxErr = 0;
    for (let i = 0; i < r.length; i++) maxErr = Math.max(maxErr, Number.isFinite(g[i]) ? Math.abs(g[i] - r[i]) : Infinity);
    const tol = feature === 'subgroup' ? K * 2 ** -22 * sx * sw : 4 * Math.sqrt(K) * 2 ** -10 * sx * sw;
    return { maxErr, tol };
  } finally {
    for (const t of [x, w, b]) t.release();
  }
}

/** ms per call of `feature` and of the f32 kernels at a shape the feature is for (best of 3 × 4 calls). */
export async function timeMatmulFeature(feature: Exclude<MatmulFeature, 'none'>): Promise<{ variantMs: number; f32Ms: number; shape: string }> {
  const [M, N, K] = feature === 'subgroup' ? [1, 1024, 2048] : [256, 1024, 1024]; // small: this runs at every app start
  const x = empty([M, K], 'f32', 'seltime.x'), w = empty([N, K], 'bf16', 'seltime.w'), y = empty([M, N], 'f32', 'seltime.y');
  const variant: MatmulVariant = feature === 'f16' ? 'tiled' : matmulVariant();
  const time = async (f: MatmulFeature) => {
    matmul(x, w, { out: y, feature: f, variant });
    await read(y);
    let best = Infinity;
    for (let r = 0; r < 3; r++) {
      const t0 = performance.now();
      for (let i = 0; i < 4; i++) matmul(x, w, { out: y, feature: f, variant });
      flush();
      await gpu().device.queue.onSubmittedWorkDone();
      best = Math.min(best, (performance.now() - t0) / 4);
    }
    return best;
  };
  try {
    return { variantMs: await time(feature), f32Ms: await time('none'), shape: `${M}×${N}×${K}` };
  } finally {
    for (const t of [x, w, y]) t.release();
  }
}

registerVariant({ name: SG, feature: 'subgroups' as GPUFeatureName, what: 'matmul y = x·Wᵀ for ≤ 4 rows: split-K with subgroupAdd', check: () => checkMatmulFeature('subgroup'), time: () => timeMatmulFeature('subgroup') });
registerVariant({ name: F16, feature: 'shader-f16', what: 'tiled matmul, f16 workgroup tiles + f32 accumulation, base-weight forward only', check: () => checkMatmulFeature('f16'), time: () => timeMatmulFeature('f16') });
