// AdamW (torch.optim.AdamW semantics) and global grad-norm clipping that never leaves the GPU
// (shaders/adamw.wgsl). Typical step:
//   const state = gradNorm(grads, maxGradNorm);          // [norm, clipScale, nonFinite, Σg²]
//   for (each param) adamwStep(p, g, m, v, { ...hp, step }, { state });
//   ... read(state) together with the loss (16 bytes) for logging / the skipped-step count.
import code from '../../shaders/adamw.wgsl?raw';
import { gpu } from '../gpu/device.ts';
import { dispatch, grid, kernel } from '../gpu/kernel.ts';
import { empty, fromData, read, type Tensor } from '../gpu/tensor.ts';
import { adamwScalars, type AdamWHyper } from './adamwHost.ts';

export type { AdamWHyper } from './cpu/adamw.ts';

const k = (entry: string) => kernel('adamw.wgsl', code, entry);
const PER_WG = 256 * 16; // elements per sumsq_partial workgroup (WG · PER_THREAD in the shader)
const FMT = 'uuuffffffffu';

function params(o: Partial<{ n: number; off: number; count: number; maxNorm: number; decay: number; lerpW: number; beta2: number; omb2: number; nss: number; bc2s: number; eps: number; skip: number }>): number[] {
  return [o.n ?? 0, o.off ?? 0, o.count ?? 0, o.maxNorm ?? 0, o.decay ?? 0, o.lerpW ?? 0, o.beta2 ?? 0, o.omb2 ?? 0, o.nss ?? 0, o.bc2s ?? 0, o.eps ?? 0, o.skip ?? 0];
}

/**
 * Global L2 norm of all gradients (as clip_grad_norm_) into a GPU state tensor [4] f32:
 * [total norm, clip scale = min(1, maxNorm/(norm + 1e-6)) (1 if maxNorm <= 0), non-finite flag
 * (1 if any gradient is NaN/Inf), Σg²]. Nothing is read back.
 */
export function gradNorm(grads: Tensor[], maxNorm = 0): Tensor {
  const counts = grads.map((g) => {
    if (g.dtype !== 'f32') throw new Error(`gradNorm: gradient "${g.name}" must be f32, got ${g.dtype}`);
    return Math.ceil(g.numel / PER_WG);
  });
  const total = counts.reduce((a, b) => a + b, 0);
  const partials = empty([2 * Math.max(total, 1)], 'f32', 'gradNorm.partials');
  let off = 0;
  grads.forEach((g, i) => {
    if (counts[i]) dispatch(k('sumsq_partial'), [g, partials], grid(counts[i]), params({ n: g.numel, off, count: counts[i] }), FMT);
    off += counts[i];
  });
  const state = empty([4], 'f32', 'gradNorm.state');
  dispatch(k('finalize'), [undefined, undefined, partials, state], 1, params({ count: total, maxNorm }), FMT);
  partials.release();
  return state;
}

/** grad *= clip scale of `state`, in place (what clip_grad_norm_ does; adamwStep already applies it). */
export function clipGrads(grads: Tensor[], state: Tensor): void {
  for (const g of grads) if (g.numel) dispatch(k('clip'), [undefined, undefined, undefined, undefined, state, g], grid(Math.ceil(g.numel / 256)), params({ n: g.numel }), FMT);
}

const unitStates = new WeakMap<GPUDevice, Tensor>();
function unitState(): Tensor {
  const dev = gpu().device;
  let t = unitStates.get(dev);
  if (!t) unitStates.set(dev, (t = fromData(new Float32Array([0, 1, 0, 0]), [4], 'f32', 'adamw.unitState')));
  return t;
}

export interface AdamWOptions {
  /** from gradNorm: the gradient is multiplied by its clip scale */
  state?: Tensor;
  /** with a state: leave param, m, v unchanged when it flags a NaN/Inf gradient (default true) */
  skipNonFinite?: boolean;
}

/** One AdamW update of a flat f32 parameter and its moments m, v, in place. */
export function adamwStep(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, hp: AdamWHyper, opts: AdamWOptions = {}): void {
  for (const t of [param, grad, m, v]) {
    if (t.dtype !== 'f32') throw new Error(`adamwStep: "${t.name}" must be f32, got ${t.dtype}`);
    if (t.numel !== param.numel) throw new Error(`adamwStep: "${t.name}" [${t.shape}] does not match param "${param.name}" [${param.shape}]`);
  }
  const s = adamwScalars(hp);
  const state = opts.state ?? unitState();
  const n = param.numel;
  if (n)
    dispatch(k('adamw'), [undefined, undefined, undefined, undefined, state, undefined, param, grad, m, v], grid(Math.ceil(n / 256)),
      params({ n, decay: s.decay, lerpW: s.lerpWeight, beta2: s.beta2, omb2: s.oneMinusBeta2, nss: s.negStepSize, bc2s: s.bc2Sqrt, eps: s.eps, skip: opts.state && opts.skipNonFinite !== false ? 1 : 0 }), FMT);
}

export interface GradState { norm: number; clipScale: number; nonFinite: boolean }

/** Read a gradNorm state (one small readback; prefer readMany with the loss). */
export async function readGradState(state: Tensor): Promise<GradState> {
  return parseGradState(await read(state));
}

export function parseGradState(s: ArrayLike<number>): GradState {
  return { norm: s[0], clipScale: s[1], nonFinite: s[2] !== 0 };
}
