// torch.nn.utils.clip_grad_norm_ in plain TypeScript, and the AdamW update of ../adamwHost.ts
// (re-exported): the references the GPU kernel is checked against step after step.
export { adamwCpu, adamwScalars, type AdamWHyper } from '../adamwHost.ts';

export interface GradNormCpu { norm: number; clipScale: number; nonFinite: boolean }

/** total = ‖(‖g₁‖, ‖g₂‖, …)‖; scale = min(1, maxNorm / (total + 1e-6)) (1 when maxNorm <= 0). */
export function gradNormCpu(grads: ArrayLike<number>[], maxNorm = 0): GradNormCpu {
  let ss = 0, nonFinite = false;
  for (const g of grads)
    for (let i = 0; i < g.length; i++) {
      if (!Number.isFinite(g[i])) nonFinite = true;
      ss += g[i] * g[i];
    }
  const norm = Math.sqrt(ss);
  const clipScale = maxNorm > 0 ? Math.min(1, maxNorm / (norm + 1e-6)) : 1;
  return { norm, clipScale, nonFinite };
}
