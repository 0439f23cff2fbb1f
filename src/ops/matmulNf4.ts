// Matmul with an NF4 weight (shaders/matmul_nf4.wgsl): y = x·Wᵀ (+ b) and dx = dy·W, W dequantised
// in the kernel. The variant (register-blocked 'reg' / workgroup-tiled 'tiled') follows the
// per-adapter choice of src/ops/matmul.ts (matmulVariant: tuned, cached, overridable).
//
// matmulW / matmulWBackwardInput take any frozen weight — f32, bf16 or NF4 — and route to the
// right kernel: the model's linear call sites use them, so a quantised base needs no other change.
import code from '../../shaders/matmul_nf4.wgsl?raw';
import { GpuError } from '../gpu/device.ts';
import { dispatch, grid, kernel, type Kernel } from '../gpu/kernel.ts';
import { isNf4, type Nf4Tensor } from '../gpu/nf4.ts';
import { empty, type Tensor } from '../gpu/tensor.ts';
import { matmul, matmulBackwardInput, matmulVariant, type LinearOptions, type MatmulVariant } from './matmul.ts';

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
  const variant = opts.variant ?? matmulVariant();
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
