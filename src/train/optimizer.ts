// AdamW over the LoRA parameters, with global grad-norm clipping that stays on the GPU: one
// `gradNorm` pass, one `adamwCheck` pass (would any new param or moment be NaN/Inf?), then every
// update reads the clip scale and the flags, and stores itself only when the whole step is sound.
import { adamwCheck, adamwStep, gradNorm, parseGradState, type GradState } from '../ops/adamw.ts';
import { copy, fill } from '../ops/elementwise.ts';
import { encoder } from '../gpu/kernel.ts';
import { readMany, write, zeros, type Tensor } from '../gpu/tensor.ts';
import type { NamedTensor } from './checkpoint.ts';

export interface AdamWConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** clip the global grad norm to this (0 = no clipping) */
  maxGradNorm: number;
}

export const ADAMW_DEFAULTS: AdamWConfig = { lr: 2e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 };

export interface TrainableParam {
  name: string;
  param: Tensor;
  grad: Tensor;
}

export class AdamW {
  readonly m: Tensor[];
  readonly v: Tensor[];
  /** optimizer steps taken (torch's state["step"]) */
  stepCount = 0;

  constructor(readonly params: TrainableParam[], readonly cfg: AdamWConfig) {
    this.m = params.map((p) => zeros(p.param.shape, 'f32', `${p.name}.exp_avg`));
    this.v = params.map((p) => zeros(p.param.shape, 'f32', `${p.name}.exp_avg_sq`));
  }

  /**
   * Clip and update every parameter at learning rate `lr`. Returns the GPU state (parseGradState);
   * a step whose gradients hold NaN/Inf, whose update would make a parameter or moment NaN/Inf, or
   * (with `requireGrad`: the loss has a gradient) whose gradients are all exactly 0 changes nothing
   * and is not counted. Nothing is read back here.
   */
  step(lr: number, opts: { requireGrad?: boolean } = {}): Tensor {
    const state = gradNorm(this.params.map((p) => p.grad), this.cfg.maxGradNorm, opts);
    const hp = { lr, beta1: this.cfg.beta1, beta2: this.cfg.beta2, eps: this.cfg.eps, weightDecay: this.cfg.weightDecay, step: this.stepCount + 1 };
    this.params.forEach((p, i) => adamwCheck(p.param, p.grad, this.m[i], this.v[i], hp, state));
    this.params.forEach((p, i) => adamwStep(p.param, p.grad, this.m[i], this.v[i], hp, { state }));
    return state;
  }

  /** Call after reading the state: counts the step when it was applied. */
  commit(s: GradState): void {
    if (applied(s)) this.stepCount++;
  }

  zeroGrads(): void {
    for (const p of this.params) fill(p.grad, 0);
  }

  /** Parameters and moments, read back in one map (for checkpoints). */
  async stateDict(): Promise<{ params: Record<string, NamedTensor>; m: Record<string, NamedTensor>; v: Record<string, NamedTensor> }> {
    const n = this.params.length;
    const all = await readMany([...this.params.map((p) => p.param), ...this.m, ...this.v]);
    const pick = (off: number) => Object.fromEntries(this.params.map((p, i) => [p.name, { shape: p.param.shape, data: all[off + i] as Float32Array }]));
    return { params: pick(0), m: pick(n), v: pick(2 * n) };
  }

  loadStateDict(sd: { params: Record<string, NamedTensor>; m: Record<string, NamedTensor>; v: Record<string, NamedTensor> }, stepCount: number): void {
    this.params.forEach((p, i) => {
      for (const [src, dst] of [[sd.params, p.param], [sd.m, this.m[i]], [sd.v, this.v[i]]] as const) {
        const t = src[p.name];
        if (!t) throw new Error(`checkpoint has no tensor for "${p.name}"`);
        if (t.data.length !== dst.numel) throw new Error(`checkpoint tensor "${p.name}" has ${t.data.length} values, the model expects ${dst.numel} [${dst.shape}]`);
        write(dst, t.data);
      }
    });
    this.stepCount = stepCount;
  }

  /**
   * A GPU copy of the parameters, moments and step count (PPO takes several optimizer steps per
   * trainer step: a fault in a later one must undo the earlier ones too, so the step is discarded whole).
   */
  snapshot(): OptimizerSnapshot {
    const src = [...this.params.map((p) => p.param), ...this.m, ...this.v];
    return { tensors: src.map((t) => copy(t)), stepCount: this.stepCount };
  }

  restoreSnapshot(s: OptimizerSnapshot): void {
    const dst = [...this.params.map((p) => p.param), ...this.m, ...this.v];
    dst.forEach((t, i) => {
      const bytes = Math.ceil(t.bindSize / 4) * 4;
      if (bytes) encoder().copyBufferToBuffer(s.tensors[i].buffer, 0, t.buffer, 0, bytes);
    });
    this.stepCount = s.stepCount;
  }

  dispose(): void {
    for (const t of [...this.m, ...this.v]) t.release();
  }
}

export interface OptimizerSnapshot {
  tensors: Tensor[];
  stepCount: number;
}

/** Whether the GPU stored the step (no flag raised). */
export function applied(s: GradState): boolean {
  return !s.nonFinite && !s.updateNonFinite && !s.vanished;
}

export { parseGradState };
