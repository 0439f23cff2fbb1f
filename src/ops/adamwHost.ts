// torch.optim.AdamW (amsgrad off, maximize off), mirrored op by op in float32 (Math.fround after each
// tensor op, scalars as torch computes them in double): the scalars the GPU kernel (adamw.ts) is fed,
// and the host update used for small CPU-side parameters (the PPO value head) and as the kernel's reference.

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step count after this update (torch's state["step"] after its increment) */
  step: number;
}

/** The per-step scalars torch computes in double and hands to its f32 tensor ops. */
export function adamwScalars(hp: AdamWHyper) {
  if (!(hp.step >= 1)) throw new Error(`AdamW step must be >= 1 (got ${hp.step})`);
  const bc1 = 1 - hp.beta1 ** hp.step;
  const bc2 = 1 - hp.beta2 ** hp.step;
  return {
    decay: 1 - hp.lr * hp.weightDecay,
    lerpWeight: 1 - hp.beta1,
    beta2: hp.beta2,
    oneMinusBeta2: 1 - hp.beta2,
    negStepSize: (hp.lr / bc1) * -1,
    bc2Sqrt: Math.sqrt(bc2),
    eps: hp.eps,
  };
}

const f = Math.fround;

/** One AdamW update in place. `clipScale` multiplies the gradient first (clip_grad_norm_). */
export function adamwCpu(param: Float32Array, grad: ArrayLike<number>, m: Float32Array, v: Float32Array, hp: AdamWHyper, clipScale = 1): void {
  const s = adamwScalars(hp);
  const decay = f(s.decay), w = f(s.lerpWeight), b2 = f(s.beta2), omb2 = f(s.oneMinusBeta2), nss = f(s.negStepSize), bc2s = f(s.bc2Sqrt), eps = f(s.eps);
  for (let i = 0; i < param.length; i++) {
    const g = f(grad[i] * f(clipScale));
    const p = f(param[i] * decay); // param.mul_(1 - lr·wd)
    const d = f(g - m[i]); // exp_avg.lerp_(grad, 1 - beta1)
    const mi = w < 0.5 ? f(m[i] + f(w * d)) : f(g - f(d * f(1 - w)));
    const vi = f(f(v[i] * b2) + f(f(omb2 * g) * g)); // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
    const denom = f(f(f(Math.sqrt(vi)) / bc2s) + eps); // (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
    param[i] = f(p + f(f(nss * mi) / denom)); // param.addcdiv_(exp_avg, denom, value=-step_size)
    m[i] = mi;
    v[i] = vi;
  }
}
