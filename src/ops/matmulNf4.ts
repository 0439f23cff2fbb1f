// Matmul with an NF4 weight (shaders/matmul_nf4.wgsl): y = x·Wᵀ (+ b) and dx = dy·W, W dequantised
// in the kernel. Two variants as for f32/bf16 (register-blocked 'reg', workgroup-tiled 'tiled'),
// chosen per adapter apart from the plain matmul's choice: dequantising costs more than the
// multiply-add it feeds, and the tiled kernel dequantises each W element once per 64 rows where
// the register kernel does it once per 4 — on SwiftShader tiled ran 64×512×512 5× faster than reg
// (same run), although reg wins there for bf16. Default 'tiled'; tuneMatmulNf4() times both once
// per adapter and remembers the winner (module map + localStorage); setNf4Variant() or
// PATCHWORK_MATMUL_NF4=reg|tiled override it.
//
// matmulW / matmulWBackwardInput take any frozen weight — f32, bf16 or NF4 — and route to the
// right kernel: the model's linear call sites use them, so a quantised base needs no other change.
import code from '../../shaders/matmul_nf4.wgsl?raw';
import { gpu, GpuError } from '../gpu/device.ts';
import { dispatch, flush, grid, kernel, type Kernel } from '../gpu/kernel.ts';
import { isNf4, uploadNf4, type Nf4Tensor } from '../gpu/nf4.ts';
import { empty, fromData, read, type Tensor } from '../gpu/tensor.ts';
import { quantizeNf4 } from './cpu/nf4.ts';
import { matmul, matmulBackwardInput, type LinearOptions, type MatmulVariant } from './matmul.ts';

export { isNf4 } from '../gpu/nf4.ts';

const FILE = 'matmul_nf4.wgsl';
const REG = { big: { WG: 64, TX: 16 }, small: { WG: 16, TX: 4 } };
const kernels = new Map<string, Kernel>();
function k(entry: string, shape?: { WG: number; TX: number }): Kernel {
  const key = `${entry}|${shape?.WG}|${shape?.TX}`;
  let kk = kernels.get(key);
  if (!kk) kernels.set(key, (kk = kernel(FILE, code, entry, shape)));
  return kk;
}

const ROUND = { float32: 0, bfloat16: 1, float16: 2 } as const;

// ---- variant choice ---------------------------------------------------------------------------

const tuned = new Map<string, MatmulVariant>();
let forced: MatmulVariant | undefined;
const LS_KEY = 'patchwork.matmulNf4Variant:';

function storage(): Storage | undefined {
  try {
    return (globalThis as { localStorage?: Storage }).localStorage;
  } catch {
    return undefined;
  }
}

/** Force a variant for every later NF4 matmul (undefined = back to the tuned/default choice). */
export function setNf4Variant(v: MatmulVariant | undefined): void {
  forced = v;
}

/** The variant NF4 matmuls use now: override, else the tuned choice for this adapter, else 'tiled'. */
export function nf4Variant(): MatmulVariant {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.PATCHWORK_MATMUL_NF4;
  const f = forced ?? (env === 'reg' || env === 'tiled' ? env : undefined);
  if (f) return f;
  const name = gpu().adapterName;
  let v = tuned.get(name);
  if (!v) {
    const s = storage()?.getItem(LS_KEY + name);
    if (s === 'reg' || s === 'tiled') tuned.set(name, (v = s));
  }
  return v ?? 'tiled';
}

/** Time both variants on y = x·Wᵀ (default 256×512×512, double-quantised W) and remember the faster. */
export async function tuneMatmulNf4(opts: { m?: number; n?: number; k?: number; reps?: number; force?: boolean } = {}): Promise<{ variant: MatmulVariant; ms: Record<MatmulVariant, number> }> {
  const { m = 256, n = 512, k: kd = 512, reps = 3 } = opts;
  const name = gpu().adapterName;
  const ms = { reg: Infinity, tiled: Infinity } as Record<MatmulVariant, number>;
  if (!opts.force && tuned.has(name)) return { variant: tuned.get(name)!, ms };
  const rnd = (len: number) => Float32Array.from({ length: len }, (_, i) => Math.sin(i * 12.9898) * 0.5);
  const x = fromData(rnd(m * kd), [m, kd], 'f32', 'tune.x');
  const w = uploadNf4(quantizeNf4(rnd(n * kd), [n, kd], { doubleQuant: true }), 'tune.w');
  const y = empty([m, n], 'f32', 'tune.y');
  const variants: MatmulVariant[] = ['reg', 'tiled'];
  for (const v of variants) { matmulNf4(x, w, { out: y, variant: v }); await read(y); }
  for (let r = 0; r < reps; r++) {
    for (const v of variants) {
      const t0 = performance.now();
      matmulNf4(x, w, { out: y, variant: v });
      flush();
      await gpu().device.queue.onSubmittedWorkDone();
      ms[v] = Math.min(ms[v], performance.now() - t0);
    }
  }
  for (const t of [x, w, y]) t.release();
  const variant: MatmulVariant = ms.reg < 0.85 * ms.tiled ? 'reg' : 'tiled';
  tuned.set(name, variant);
  try { storage()?.setItem(LS_KEY + name, variant); } catch { /* storage full or denied */ }
  return { variant, ms };
}

/** The uniform block and the storage bindings shared by every entry point. */
function setup(w: Nf4Tensor, M: number, N: number, L: number, flags: number, alpha: number, beta: number, sbl: number, sbj: number) {
  const s = w.storage;
  const f = flags | (s.nested ? 4 : 0) | (ROUND[s.dtype] << 3);
  const params = [M, N, L, f, alpha, beta, w.elemOffset, sbl, sbj, Math.log2(s.blocksize), Math.log2(s.nested?.blocksize ?? 256), s.nested?.offset ?? 0];
  return { params, fmt: 'uuuuffuuuuuf' as const, bufs: [s.codes, s.absmax, s.nestedAbsmax ?? s.qmap, s.qmap] };
}

function run(dir: 'fwd' | 'bwd', a: Tensor, w: Nf4Tensor, out: Tensor, M: number, N: number, L: number, opts: { bias?: Tensor; accumulate?: boolean; alpha?: number; variant?: MatmulVariant }) {
  const K = w.shape[1];
  const [sbl, sbj] = dir === 'fwd' ? [1, K] : [K, 1];
  const flags = (opts.bias ? 1 : 0) | (opts.accumulate ? 2 : 0);
  const { params, fmt, bufs } = setup(w, M, N, L, flags, opts.alpha ?? 1, opts.accumulate ? 1 : 0, sbl, sbj);
  const bias = opts.bias ?? w.storage.qmap; // unused unless flags say so
  const variant = opts.variant ?? nf4Variant();
  if (variant === 'tiled') {
    dispatch(k(`${dir}_tiled`), [a, ...bufs, bias, out], [Math.ceil(N / 64), Math.ceil(M / 64)], params, fmt);
    return;
  }
  const blocks = (s: { WG: number; TX: number }) => [Math.ceil(N / (4 * s.TX)), Math.ceil(M / (4 * (s.WG / s.TX)))];
  const [bx, by] = blocks(REG.big);
  const shape = bx * by < 16 ? REG.small : REG.big;
  dispatch(k(`${dir}_reg`, shape), [a, ...bufs, bias, out], blocks(shape) as [number, number], params, fmt);
}

function rows(t: Tensor, last: number, what: string, op: string): number {
  const s = t.shape;
  if (!s.length || s[s.length - 1] !== last) throw new GpuError(`${op}: ${what} "${t.name}" [${s}] must end in ${last}`);
  return t.numel / last;
}

function check(w: Nf4Tensor, op: string): [number, number] {
  if (w.shape.length !== 2) throw new GpuError(`${op}: NF4 weight "${w.name}" must be [out, in], got [${w.shape}]`);
  if (w.storage.codes.released) throw new GpuError(`${op}: NF4 weight "${w.name}" was released`);
  return [w.shape[0], w.shape[1]];
}

function output(opts: LinearOptions, shape: number[], n: number, name: string, op: string): Tensor {
  if (opts.out) {
    if (opts.out.numel !== n || opts.out.dtype !== 'f32') throw new GpuError(`${op}: out "${opts.out.name}" must be f32 with ${n} elements, got ${opts.out.dtype} [${opts.out.shape}]`);
    return opts.out;
  }
  if (opts.accumulate) throw new GpuError(`${op}: accumulate needs an existing out tensor`);
  return empty(shape, 'f32', name);
}

/** y = x·Wᵀ (+ b), W NF4 [N, K]: x [..., K] f32 → y [..., N]. */
export function matmulNf4(x: Tensor, w: Nf4Tensor, opts: LinearOptions = {}): Tensor {
  const op = 'matmulNf4';
  const [N, K] = check(w, op);
  const M = rows(x, K, 'x', `${op} (weight "${w.name}" [${w.shape}])`);
  if (x.dtype !== 'f32') throw new GpuError(`${op}: x "${x.name}" must be f32, got ${x.dtype}`);
  if (opts.bias && (opts.bias.numel !== N || opts.bias.dtype !== 'f32')) throw new GpuError(`${op}: bias "${opts.bias.name}" must be f32 [${N}], got ${opts.bias.dtype} [${opts.bias.shape}]`);
  const out = output(opts, [...x.shape.slice(0, -1), N], M * N, opts.name ?? `${w.name}.out`, op);
  if (M * N) run('fwd', x, w, out, M, N, K, opts);
  return out;
}

/** dx = dy·W (+= with accumulate), W NF4 [N, K]: dy [..., N] → dx [..., K]. */
export function matmulNf4BackwardInput(dy: Tensor, w: Nf4Tensor, opts: Omit<LinearOptions, 'bias'> = {}): Tensor {
  const op = 'matmulNf4BackwardInput';
  const [N, K] = check(w, op);
  const M = rows(dy, N, 'dy', `${op} (weight "${w.name}" [${w.shape}])`);
  if (dy.dtype !== 'f32') throw new GpuError(`${op}: dy "${dy.name}" must be f32, got ${dy.dtype}`);
  const out = output(opts, [...dy.shape.slice(0, -1), K], M * K, opts.name ?? `${w.name}.dx`, op);
  if (M * K) run('bwd', dy, w, out, M, K, N, opts);
  return out;
}

/** The weight as f32 [N, K] (tests and debugging only: the point of NF4 is never to hold this). */
export function dequantizeNf4Gpu(w: Nf4Tensor): Tensor {
  const n = w.numel;
  const out = empty([...w.shape], 'f32', `${w.name}.dequant`);
  const { params, fmt, bufs } = setup(w, n, 1, 1, 0, 1, 0, 1, 1);
  dispatch(k('dequant'), [undefined, ...bufs, undefined, out], grid(Math.ceil(n / 64)), params, fmt);
  return out;
}

/** y = x·Wᵀ (+ b) for any frozen weight: f32 / bf16 (ops/matmul.ts) or NF4. */
export function matmulW(x: Tensor, w: Tensor, opts: LinearOptions = {}): Tensor {
  return isNf4(w) ? matmulNf4(x, w, opts) : matmul(x, w, opts);
}

/** dx = dy·W for any frozen weight: f32 / bf16 or NF4. */
export function matmulWBackwardInput(dy: Tensor, w: Tensor, opts: Omit<LinearOptions, 'bias'> = {}): Tensor {
  return isNf4(w) ? matmulNf4BackwardInput(dy, w, opts) : matmulBackwardInput(dy, w, opts);
}
