// AdamW (torch.optim.AdamW semantics) and global grad-norm clipping that never leaves the GPU
// (shaders/adamw.wgsl). Typical step:
//   const state = gradNorm(grads, maxGradNorm, { requireGrad });   // [8]: see parseGradState
//   for (each param) adamwCheck(p, g, m, v, { ...hp, step }, state); // flags a NaN/Inf result
//   for (each param) adamwStep(p, g, m, v, { ...hp, step }, { state }); // commits unless flagged
//   ... read(state) together with the loss (32 bytes): the step's one readback.
import code from '../../shaders/adamw.wgsl?raw';
import { gpu } from '../gpu/device.ts';
import { dispatch, grid, kernel } from '../gpu/kernel.ts';
import { empty, fromData, read, type Tensor } from '../gpu/tensor.ts';
import { adamwScalars, type AdamWHyper } from './adamwHost.ts';

export type { AdamWHyper } from './cpu/adamw.ts';

const k = (entry: string) => kernel('adamw.wgsl', code, entry);
const PER_WG = 256 * 16; // elements per sumsq_partial workgroup (WG · PER_THREAD in the shader)
const FMT = 'uuuffffffffuu';

function params(o: Partial<{ n: number; off: number; count: number; maxNorm: number; decay: number; lerpW: number; beta2: number; omb2: number; nss: number; bc2s: number; eps: number; skip: number; flags: number }>): number[] {
  return [o.n ?? 0, o.off ?? 0, o.count ?? 0, o.maxNorm ?? 0, o.decay ?? 0, o.lerpW ?? 0, o.beta2 ?? 0, o.omb2 ?? 0, o.nss ?? 0, o.bc2s ?? 0, o.eps ?? 0, o.skip ?? 0, o.flags ?? 0];
}

/** Length of the GPU state tensor of gradNorm. */
export const GRAD_STATE_SIZE = 8;

/**
 * Global L2 norm of all gradients (as clip_grad_norm_) into a GPU state tensor [8] f32:
 * [total norm, clip scale = min(1, maxNorm/(norm + 1e-6)) (1 if maxNorm <= 0), non-finite flag
 * (1 if any gradient is NaN/Inf or Σg² overflows), Σg², update non-finite (0 until adamwCheck),
 * vanished (1 if `requireGrad` and every gradient is exactly 0), 0, 0]. Nothing is read back.
 */
export function gradNorm(grads: Tensor[], maxNorm = 0, opts: { requireGrad?: boolean } = {}): Tensor {
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
  const state = empty([GRAD_STATE_SIZE], 'f32', 'gradNorm.state');
  dispatch(k('finalize'), [undefined, undefined, partials, state], 1, params({ count: total, maxNorm, flags: opts.requireGrad ? 1 : 0 }), FMT);
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
  if (!t) unitStates.set(dev, (t = fromData(new Float32Array([0, 1, 0, 0, 0, 0, 0, 0]), [GRAD_STATE_SIZE], 'f32', 'adamw.unitState')));
  return t;
}

export interface AdamWOptions {
  /** from gradNorm: the gradient is multiplied by its clip scale */
  state?: Tensor;
  /** with a state: leave param, m, v unchanged when it flags a NaN/Inf gradient, a NaN/Inf update (adamwCheck) or vanished gradients (default true) */
  skipNonFinite?: boolean;
}

function checkArgs(what: string, param: Tensor, grad: Tensor, m: Tensor, v: Tensor): void {
  for (const t of [param, grad, m, v]) {
    if (t.dtype !== 'f32') throw new Error(`${what}: "${t.name}" must be f32, got ${t.dtype}`);
    if (t.numel !== param.numel) throw new Error(`${what}: "${t.name}" [${t.shape}] does not match param "${param.name}" [${param.shape}]`);
  }
}

/**
 * Compute this AdamW update without storing it and raise the state's "update non-finite" flag
 * (state[4]) if any new param, m or v would be NaN/Inf. Run it for every parameter before the
 * adamwStep calls with the same `hp` and state: they then store all or nothing.
 */
export function adamwCheck(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, hp: AdamWHyper, state: Tensor): void {
  checkArgs('adamwCheck', param, grad, m, v);
  if (state.numel !== GRAD_STATE_SIZE) throw new Error(`adamwCheck: "${state.name}" must be a gradNorm state [${GRAD_STATE_SIZE}], got [${state.shape}]`);
  const s = adamwScalars(hp);
  const n = param.numel;
  if (n)
    dispatch(k('adamw_check'), [undefined, undefined, undefined, undefined, undefined, undefined, param, grad, m, v, state], grid(Math.ceil(n / 256)),
      params({ n, decay: s.decay, lerpW: s.lerpWeight, beta2: s.beta2, omb2: s.oneMinusBeta2, nss: s.negStepSize, bc2s: s.bc2Sqrt, eps: s.eps }), FMT);
}

/** One AdamW update of a flat f32 parameter and its moments m, v, in place. */
export function adamwStep(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, hp: AdamWHyper, opts: AdamWOptions = {}): void {
  checkArgs('adamwStep', param, grad, m, v);
  const s = adamwScalars(hp);
  const state = opts.state ?? unitState();
  const n = param.numel;
  if (n)
    dispatch(k('adamw'), [undefined, undefined, undefined, undefined, state, undefined, param, grad, m, v], grid(Math.ceil(n / 256)),
      params({ n, decay: s.decay, lerpW: s.lerpWeight, beta2: s.beta2, omb2: s.oneMinusBeta2, nss: s.negStepSize, bc2s: s.bc2Sqrt, eps: s.eps, skip: opts.state && opts.skipNonFinite !== false ? 1 : 0 }), FMT);
}

export interface GradState {
  norm: number;
  clipScale: number;
  /** a gradient was NaN/Inf (or Σg² overflowed): the step was not applied */
  nonFinite: boolean;
  /** the update would have made a parameter or moment NaN/Inf: the step was not applied */
  updateNonFinite: boolean;
  /** every gradient was exactly 0 although the loss had a gradient: the step was not applied */
  vanished: boolean;
}

/** Read a gradNorm state (one small readback; prefer readMany with the loss). */
export async function readGradState(state: Tensor): Promise<GradState> {
  return parseGradState(await read(state));
}

export function parseGradState(s: ArrayLike<number>): GradState {
  return { norm: s[0], clipScale: s[1], nonFinite: s[2] !== 0, updateNonFinite: (s[4] ?? 0) !== 0, vanished: (s[5] ?? 0) !== 0 };
}
