// Group Relative Policy Optimization, as trl's GRPOTrainer defines it.
//
// Layout: R = numPrompts·G completions, rows grouped by prompt (rows g·G .. g·G+G−1 answer prompt g,
// trl's repeat_interleave order), each right-padded to T tokens: per-token tensors are row-major
// [R, T] with a mask (1 on real completion tokens incl. the eos, 0 on padding).
//
// 1. After sampling and scoring: grpoAdvantages (one advantage per completion) and completionMetrics.
// 2. Each optimisation step: grpoLoss from the policy's per-token logps (GPU gather), the old logps
//    (off-policy steps only) and the reference logps (only when beta ≠ 0), giving the loss, dlogps for
//    the backward, and trl's metrics.
//
// Per token:  ratio = exp(logp − old)
//             ℓ = −min(ratio·A, clip(ratio, 1−ε_low, 1+ε_high)·A) + β·(exp(ref−logp) − (ref−logp) − 1)
// Reduced by loss type: grpo = mean over sequences of per-sequence token means; bnpo = token mean of
// the batch; dr_grpo = Σ / (R·max_completion_length); dapo = Σ / (completion tokens of the whole
// accumulated batch).

export type ScaleRewards = 'group' | 'batch' | 'none';
export type GrpoLossType = 'grpo' | 'bnpo' | 'dr_grpo' | 'dapo';

function mean(a: ArrayLike<number>, from = 0, to = a.length): number {
  let s = 0;
  for (let i = from; i < to; i++) s += a[i];
  return s / (to - from);
}

/** Unbiased (Bessel) standard deviation; 0 for fewer than two values (trl's guard for G = 1). */
function stdUnbiased(a: ArrayLike<number>, from = 0, to = a.length): number {
  const n = to - from;
  if (n < 2) return 0;
  const m = mean(a, from, to);
  let s = 0;
  for (let i = from; i < to; i++) s += (a[i] - m) ** 2;
  return Math.sqrt(s / (n - 1));
}

function nanValues(a: ArrayLike<number>): number[] {
  const out: number[] = [];
  for (let i = 0; i < a.length; i++) if (!Number.isNaN(a[i])) out.push(a[i]);
  return out;
}

export interface AdvantageResult {
  /** [R] (r − group mean) / (std + 1e-4); std per group, over the batch, or not at all (scaleRewards) */
  advantages: Float64Array;
  /** reward, reward_std, frac_reward_zero_std and, per reward function, rewards/<name>/mean and /std */
  metrics: Record<string, number>;
}

/**
 * Advantages from the total (weighted) rewards [R] of R = numPrompts·G completions.
 * scaleRewards: 'group' (default; GRPO), 'batch' (std over the whole batch, mean still per group),
 * 'none' (Dr. GRPO: no division). perFunc: the unweighted per-function rewards (NaN = not applicable),
 * for the rewards/<name>/* metrics only.
 */
export function grpoAdvantages(rewards: ArrayLike<number>, numGenerations: number, opts: { scaleRewards?: ScaleRewards; perFunc?: Record<string, ArrayLike<number>> } = {}): AdvantageResult {
  const R = rewards.length, G = numGenerations;
  if (!(G >= 1 && Number.isInteger(G))) throw new Error(`grpoAdvantages: numGenerations must be a positive integer, got ${G}`);
  if (R === 0 || R % G !== 0) throw new Error(`grpoAdvantages: ${R} rewards are not whole groups of ${G} generations`);
  const scale = opts.scaleRewards ?? 'group';
  if (scale !== 'group' && scale !== 'batch' && scale !== 'none') throw new Error(`grpoAdvantages: scaleRewards must be group, batch or none, got "${scale as string}"`);
  const advantages = new Float64Array(R), std = new Float64Array(R);
  const batchStd = stdUnbiased(rewards);
  for (let g = 0; g < R / G; g++) {
    const from = g * G, to = from + G;
    const m = mean(rewards, from, to);
    // 'none' still measures the group std, for frac_reward_zero_std and reward_std.
    const s = scale === 'batch' ? batchStd : stdUnbiased(rewards, from, to);
    for (let i = from; i < to; i++) {
      std[i] = s;
      advantages[i] = scale === 'none' ? rewards[i] - m : (rewards[i] - m) / (s + 1e-4);
    }
  }
  let zero = 0;
  for (let i = 0; i < R; i++) if (Math.abs(std[i]) <= 1e-8) zero++; // torch.isclose(std, 0)
  const metrics: Record<string, number> = { reward: mean(rewards), reward_std: mean(std), frac_reward_zero_std: zero / R };
  for (const [name, v] of Object.entries(opts.perFunc ?? {})) {
    if (v.length !== R) throw new Error(`grpoAdvantages: reward function "${name}" has ${v.length} values for ${R} completions`);
    const x = nanValues(v);
    metrics[`rewards/${name}/mean`] = x.length ? mean(x) : NaN;
    metrics[`rewards/${name}/std`] = x.length ? stdUnbiased(x) : NaN;
  }
  return { advantages, metrics };
}

/**
 * Completion-length metrics as trl logs them. mask [R, T]: lengths are row sums. terminated [R]: 1 when
 * the completion ended with an eos (else it hit max_completion_length and was cut: "clipped").
 */
export function completionMetrics(mask: ArrayLike<number>, cols: number, terminated: ArrayLike<number | boolean>): Record<string, number> {
  const R = terminated.length;
  if (mask.length !== R * cols) throw new Error(`completionMetrics: mask has ${mask.length} entries, expected ${R}×${cols}`);
  const len: number[] = [], term: number[] = [];
  for (let r = 0; r < R; r++) {
    let n = 0;
    for (let t = 0; t < cols; t++) n += mask[r * cols + t] ? 1 : 0;
    len.push(n);
    if (terminated[r]) term.push(n);
  }
  const t = term.length ? term : [0];
  return {
    'completions/mean_length': mean(len),
    'completions/min_length': Math.min(...len),
    'completions/max_length': Math.max(...len),
    'completions/clipped_ratio': 1 - term.length / R,
    'completions/mean_terminated_length': mean(t),
    'completions/min_terminated_length': Math.min(...t),
    'completions/max_terminated_length': Math.max(...t),
  };
}

export interface GrpoConfig {
  /** KL coefficient. 0 (trl's default) drops the KL term: no reference logps, no reference forward. */
  beta: number;
  /** lower clip ε (trl `epsilon`) */
  epsilon: number;
  /** upper clip ε (trl `epsilon_high`); default = epsilon */
  epsilonHigh?: number;
  /** default 'grpo' */
  lossType?: GrpoLossType;
  /** dr_grpo's divisor per sequence; default = T (the padded width) */
  maxCompletionLength?: number;
  /** dapo: completion tokens in the whole accumulated batch (trl num_items_in_batch); default = this call's */
  numItemsInBatch?: number;
  /** grpo, bnpo, dr_grpo divide by it, as trl does (dapo's normalizer already covers the accumulation) */
  gradientAccumulationSteps?: number;
  /** optional upper bound on the unclipped ratio (trl `delta`, two-sided clipping); off by default */
  delta?: number;
}

export interface GrpoInput {
  /** [R, T] policy log-probs of the completion tokens */
  logps: ArrayLike<number>;
  /** [R, T] 1 on real completion tokens */
  mask: ArrayLike<number>;
  /** [R] from grpoAdvantages */
  advantages: ArrayLike<number>;
  /** T */
  cols: number;
  /**
   * [R, T] log-probs of the policy that sampled the completions. Absent: on-policy (a single gradient
   * step per generation batch), old = logps treated as constants, so ratio = 1 (trl does the same).
   */
  oldLogps?: ArrayLike<number>;
  /** [R, T] reference (LoRA off) log-probs; required when beta ≠ 0, ignored when beta = 0 */
  refLogps?: ArrayLike<number>;
  /** [R, T] optional per-token entropies for the `entropy` metric */
  entropies?: ArrayLike<number>;
}

export interface GrpoResult {
  loss: number;
  /** [R, T] ℓ, 0 on padding */
  perTokenLoss: Float64Array;
  /** [R, T] k3 KL, 0 on padding; undefined when beta = 0 */
  perTokenKl?: Float64Array;
  /** [R, T] d loss / d logps, 0 on padding */
  dlogps: Float64Array;
  /** kl (beta ≠ 0), entropy (with entropies), clip_ratio/low_mean, high_mean, region_mean */
  metrics: Record<string, number>;
}

export function grpoLoss(inp: GrpoInput, cfg: GrpoConfig): GrpoResult {
  const T = inp.cols, N = inp.logps.length, R = inp.advantages.length;
  if (!(T > 0) || N !== R * T) throw new Error(`grpoLoss: logps has ${N} entries, expected ${R} advantages × ${T} columns`);
  const same = (name: string, a: ArrayLike<number> | undefined) => { if (a && a.length !== N) throw new Error(`grpoLoss: ${name} has ${a.length} entries, logps ${N}`); };
  same('mask', inp.mask); same('oldLogps', inp.oldLogps); same('refLogps', inp.refLogps); same('entropies', inp.entropies);
  const beta = cfg.beta;
  if (beta !== 0 && !inp.refLogps) throw new Error(`grpoLoss: beta = ${beta} needs refLogps (the reference model's log-probs); with beta = 0 none are needed`);
  const epsLow = cfg.epsilon, epsHigh = cfg.epsilonHigh ?? cfg.epsilon;
  const type = cfg.lossType ?? 'grpo';
  const lo = 1 - epsLow, hi = 1 + epsHigh;

  const perTokenLoss = new Float64Array(N), dl = new Float64Array(N); // dl = dℓ/dlogp per token
  const perTokenKl = beta !== 0 ? new Float64Array(N) : undefined;
  let tokens = 0, klSum = 0, entSum = 0, lowClip = 0, highClip = 0, regionClip = 0;
  for (let r = 0; r < R; r++) {
    const A = inp.advantages[r];
    for (let t = 0; t < T; t++) {
      const i = r * T + t;
      if (!inp.mask[i]) continue;
      tokens++;
      const logp = inp.logps[i];
      const old = inp.oldLogps ? inp.oldLogps[i] : logp;
      const ratio = Math.exp(logp - old);
      // branch 1: coef1·A with coef1 = ratio (optionally capped at delta: a constant there, no gradient)
      const capped = cfg.delta !== undefined && ratio > cfg.delta;
      const coef1 = capped ? cfg.delta! : ratio;
      const coef2 = Math.min(Math.max(ratio, lo), hi);
      const l1 = coef1 * A, l2 = coef2 * A;
      // −min(l1, l2): the selected branch carries the gradient (l1 on ties: inside the clip range the
      // two branches are equal and have the same gradient). d ratio / d logp = ratio.
      let d: number;
      if (l1 <= l2) d = capped ? 0 : -A * ratio;
      else d = ratio >= lo && ratio <= hi ? -A * ratio : 0;
      let loss = -Math.min(l1, l2);
      if (perTokenKl) {
        const x = inp.refLogps![i] - logp;
        const kl = Math.exp(x) - x - 1;
        perTokenKl[i] = kl;
        klSum += kl;
        loss += beta * kl;
        d += beta * (1 - Math.exp(x)); // d kl / d logp = −e^x + 1
      }
      perTokenLoss[i] = loss;
      dl[i] = d;
      if (inp.entropies) entSum += inp.entropies[i];
      // trl's clip statistics: tokens whose ratio left the range in the direction that clipping stops
      const low = ratio < lo && A < 0, high = ratio > hi && A > 0;
      lowClip += low ? 1 : 0;
      highClip += high ? 1 : 0;
      regionClip += low || high ? 1 : 0;
    }
  }

  // Loss reduction: weight w_i of each token (the gradient is w_i·dℓ_i).
  const accum = cfg.gradientAccumulationSteps ?? 1;
  const w = new Float64Array(R); // per-row token weight
  if (type === 'grpo') {
    for (let r = 0; r < R; r++) {
      let n = 0;
      for (let t = 0; t < T; t++) n += inp.mask[r * T + t] ? 1 : 0;
      w[r] = 1 / (Math.max(n, 1) * R * accum);
    }
  } else if (type === 'bnpo') w.fill(1 / (Math.max(tokens, 1) * accum));
  else if (type === 'dr_grpo') w.fill(1 / (R * (cfg.maxCompletionLength ?? T) * accum));
  else if (type === 'dapo') {
    const norm = cfg.numItemsInBatch ?? tokens;
    w.fill(norm > 0 ? 1 / norm : 0);
  } else throw new Error(`grpoLoss: unknown loss type "${type as string}" (grpo, bnpo, dr_grpo, dapo)`);

  let loss = 0;
  const dlogps = new Float64Array(N);
  for (let r = 0; r < R; r++) {
    for (let t = 0; t < T; t++) {
      const i = r * T + t;
      if (!inp.mask[i]) continue;
      loss += w[r] * perTokenLoss[i];
      dlogps[i] = w[r] * dl[i];
    }
  }

  const c = Math.max(tokens, 1);
  const metrics: Record<string, number> = {};
  if (perTokenKl) metrics.kl = klSum / c;
  if (inp.entropies) metrics.entropy = entSum / c;
  metrics['clip_ratio/low_mean'] = lowClip / c;
  metrics['clip_ratio/high_mean'] = highClip / c;
  metrics['clip_ratio/region_mean'] = regionClip / c;
  return { loss, perTokenLoss, perTokenKl, dlogps, metrics };
}
