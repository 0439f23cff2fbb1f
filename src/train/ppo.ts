// PPO with a KL penalty in the per-token rewards, as trl's PPOTrainer (the "N implementation details of
// RLHF" PPO) defines it. The value head (a linear layer on the last hidden state) belongs to the model;
// this file is the math on its per-token outputs.
//
// Layout as in grpo.ts: R completions right-padded to T tokens, per-token tensors [R, T] row-major with a
// mask. values[r, t] = V(state before completion token t) = the value head on the hidden state of the
// position whose logits predict token t (the same alignment as logps).
//
// Rollout (once per generation batch, all inputs constants):
//   kl_t = logp_t − ref_t (k1; or k3 = (e^{ref−logp} − 1) − (ref − logp))
//   r_t = −kl_coef·kl_t, plus the score at the sequence's last real token
//   GAE backwards: δ_t = r_t + γ·V_{t+1} − V_t, A_t = δ_t + γλ·A_{t+1} (V and A past the end = 0)
//   returns = A + V;  advantages whitened over the real tokens (trl masked_whiten)
// Update (trl's loop, ppoSchedule / ppoEpochs): for each of num_ppo_epochs a fresh permutation of the
// rollout rows, cut into num_mini_batches mini-batches (one optimizer step each), each cut into
// gradient_accumulation_steps micro-batches (loss / accumulation steps, gradients summed). The first
// update's ratio is 1; the later ones see the policy the earlier ones moved, so clipping acts.
// Metrics are the means over every (epoch, mini-batch, micro-batch), as trl's *_stats tensors.
// Loss (each micro-batch), from the new logps and new values:
//   ratio = exp(logp − old);  pg = max(−A·ratio, −A·clip(ratio, 1±cliprange)), token mean
//   v_clip = clip(v, old_v ± cliprange_value);  vf = ½·max((v − ret)², (v_clip − ret)²), token mean
//   loss = pg + vf_coef·vf
// Deviation from trl, on purpose: trl adds the score one position after the last real token (and keeps
// that extra position in the value loss); here the score sits on the last real token and the value loss
// uses the real tokens only — the textbook placement, with no phantom step.

export interface PpoConfig {
  /** KL penalty coefficient in the rewards (trl kl_coef, default 0.05) */
  klCoef: number;
  /** trl default 1 */
  gamma: number;
  /** trl default 0.95 */
  lam: number;
  /** policy ratio clip (trl default 0.2) */
  cliprange: number;
  /** value clip (trl default 0.2) */
  cliprangeValue: number;
  /** value loss weight (trl default 0.1) */
  vfCoef: number;
  /** trl kl_estimator: 'k1' (default) or 'k3' */
  klEstimator?: 'k1' | 'k3';
  /** trl whiten_rewards (default false): whiten the per-token rewards before GAE, mean kept */
  whitenRewards?: boolean;
  /** trl num_ppo_epochs (default 4): optimisation passes over each rollout */
  numPpoEpochs?: number;
  /** trl num_mini_batches (default 1): optimizer steps per PPO epoch */
  numMiniBatches?: number;
}

export const PPO_DEFAULTS: PpoConfig = { klCoef: 0.05, gamma: 1, lam: 0.95, cliprange: 0.2, cliprangeValue: 0.2, vfCoef: 0.1, klEstimator: 'k1', whitenRewards: false, numPpoEpochs: 4, numMiniBatches: 1 };

function maskedMean(x: ArrayLike<number>, mask: ArrayLike<number>): number {
  let s = 0, n = 0;
  for (let i = 0; i < x.length; i++) if (mask[i]) { s += x[i]; n++; }
  return s / n;
}

/** trl masked_var: Bessel-corrected variance over the masked entries. */
export function maskedVar(x: ArrayLike<number>, mask: ArrayLike<number>): number {
  const m = maskedMean(x, mask);
  let s = 0, n = 0;
  for (let i = 0; i < x.length; i++) if (mask[i]) { s += (x[i] - m) ** 2; n++; }
  if (n < 2) throw new Error(`masked_var: needs at least 2 masked values, got ${n} (use more or longer completions)`);
  return (s / n) * (n / (n - 1));
}

/** trl masked_whiten: (x − mean)/sqrt(var + 1e-8) over the masked entries (+ mean back if !shiftMean); 0 off the mask. */
export function maskedWhiten(x: ArrayLike<number>, mask: ArrayLike<number>, shiftMean = true): Float64Array {
  const m = maskedMean(x, mask), inv = 1 / Math.sqrt(maskedVar(x, mask) + 1e-8);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) if (mask[i]) out[i] = (x[i] - m) * inv + (shiftMean ? 0 : m);
  return out;
}

export interface PpoRolloutInput {
  /** [R, T] log-probs of the sampled tokens under the sampling policy (these are also the "old" logps) */
  logps: ArrayLike<number>;
  /** [R, T] reference (LoRA off) log-probs */
  refLogps: ArrayLike<number>;
  /** [R, T] value-head outputs of the sampling policy */
  values: ArrayLike<number>;
  /** [R] sequence scores (reward functions / reward model) */
  scores: ArrayLike<number>;
  /** [R, T] 1 on real completion tokens (a contiguous prefix of each row) */
  mask: ArrayLike<number>;
  cols: number;
}

export interface PpoRollout {
  /** [R, T] per-token KL estimate (0 on padding) */
  kl: Float64Array;
  /** [R, T] −kl_coef·kl */
  nonScoreReward: Float64Array;
  /** [R, T] non-score reward + score at the last token (whitened if whitenRewards) */
  rewards: Float64Array;
  /** [R, T] whitened GAE advantages, 0 on padding */
  advantages: Float64Array;
  /** [R, T] unwhitened advantages + values: the value targets */
  returns: Float64Array;
  /** objective/kl, objective/entropy, objective/non_score_reward, objective/rlhf_reward, objective/scores */
  metrics: Record<string, number>;
}

export function ppoRollout(inp: PpoRolloutInput, cfg: PpoConfig): PpoRollout {
  const T = inp.cols, R = inp.scores.length, N = R * T;
  for (const [name, a] of Object.entries({ logps: inp.logps, refLogps: inp.refLogps, values: inp.values, mask: inp.mask })) {
    if (a.length !== N) throw new Error(`ppoRollout: ${name} has ${a.length} entries, expected ${R} scores × ${T} columns`);
  }
  const kl = new Float64Array(N), nonScore = new Float64Array(N);
  let rewards: Float64Array = new Float64Array(N);
  const last = new Int32Array(R).fill(-1);
  for (let r = 0; r < R; r++) {
    for (let t = 0; t < T; t++) {
      const i = r * T + t;
      if (!inp.mask[i]) continue;
      last[r] = t;
      const logr = inp.refLogps[i] - inp.logps[i];
      kl[i] = cfg.klEstimator === 'k3' ? Math.expm1(logr) - logr : -logr;
      nonScore[i] = -cfg.klCoef * kl[i];
      rewards[i] = nonScore[i];
    }
    if (last[r] < 0) throw new Error(`ppoRollout: completion ${r} has no tokens`);
    rewards[r * T + last[r]] += inp.scores[r];
  }
  if (cfg.whitenRewards) rewards = maskedWhiten(rewards, inp.mask, false);

  const adv = new Float64Array(N), returns = new Float64Array(N);
  for (let r = 0; r < R; r++) {
    let gae = 0, nextV = 0;
    for (let t = last[r]; t >= 0; t--) {
      const i = r * T + t;
      const v = inp.values[i];
      const delta = rewards[i] + cfg.gamma * nextV - v;
      gae = delta + cfg.gamma * cfg.lam * gae;
      adv[i] = gae;
      returns[i] = gae + v;
      nextV = v;
    }
  }
  const advantages = maskedWhiten(adv, inp.mask);

  // trl's objective/* are means over sequences of per-sequence sums.
  let klSeq = 0, ent = 0, ns = 0, sc = 0;
  for (let i = 0; i < N; i++) if (inp.mask[i]) { klSeq += kl[i]; ent -= inp.logps[i]; ns += nonScore[i]; }
  for (let r = 0; r < R; r++) sc += inp.scores[r];
  const metrics = {
    'objective/kl': klSeq / R,
    // trl's "entropy" here is the sampled-token estimate −Σ logp per sequence
    'objective/entropy': ent / R,
    'objective/non_score_reward': ns / R,
    'objective/rlhf_reward': ns / R + sc / R,
    'objective/scores': sc / R,
  };
  return { kl, nonScoreReward: nonScore, rewards, advantages, returns, metrics };
}

export interface PpoLossInput {
  /** [R, T] new policy log-probs (carry the gradient) */
  logps: ArrayLike<number>;
  /** [R, T] new value-head outputs (carry the gradient) */
  values: ArrayLike<number>;
  /** [R, T] rollout log-probs and values (constants) */
  oldLogps: ArrayLike<number>;
  oldValues: ArrayLike<number>;
  /** [R, T] from ppoRollout */
  advantages: ArrayLike<number>;
  returns: ArrayLike<number>;
  mask: ArrayLike<number>;
  cols: number;
  /** [R, T] optional per-token entropies of the new policy, for policy/entropy_avg */
  entropies?: ArrayLike<number>;
}

export interface PpoLossResult {
  /** pg + vf_coef·vf */
  loss: number;
  pgLoss: number;
  vfLoss: number;
  /** [R, T] d loss / d logps and d loss / d values, 0 on padding */
  dlogps: Float64Array;
  dvalues: Float64Array;
  /** policy/approxkl_avg, policy/clipfrac_avg, loss/policy_avg, loss/value_avg, val/clipfrac_avg, val/ratio (+ policy/entropy_avg) */
  metrics: Record<string, number>;
}

export function ppoLoss(inp: PpoLossInput, cfg: PpoConfig): PpoLossResult {
  const T = inp.cols, N = inp.logps.length;
  if (!(T > 0) || N % T !== 0) throw new Error(`ppoLoss: logps has ${N} entries, not a multiple of ${T} columns`);
  for (const [name, a] of Object.entries({ values: inp.values, oldLogps: inp.oldLogps, oldValues: inp.oldValues, advantages: inp.advantages, returns: inp.returns, mask: inp.mask, entropies: inp.entropies })) {
    if (a && a.length !== N) throw new Error(`ppoLoss: ${name} has ${a.length} entries, logps ${N}`);
  }
  let n = 0;
  for (let i = 0; i < N; i++) if (inp.mask[i]) n++;
  if (n === 0) throw new Error('ppoLoss: no completion tokens');
  const dlogps = new Float64Array(N), dvalues = new Float64Array(N);
  let pg = 0, vf = 0, pgClip = 0, vfClip = 0, kl2 = 0, ratioSum = 0, ent = 0;
  const lo = 1 - cfg.cliprange, hi = 1 + cfg.cliprange;
  for (let i = 0; i < N; i++) {
    if (!inp.mask[i]) {
      ratioSum += 1; // trl: padded logps are equal (INVALID_LOGPROB), so their ratio is 1 in val/ratio
      continue;
    }
    const A = inp.advantages[i];
    const diff = inp.logps[i] - inp.oldLogps[i];
    const ratio = Math.exp(diff);
    const c = Math.min(Math.max(ratio, lo), hi);
    const p1 = -A * ratio, p2 = -A * c;
    // max picks the branch; the clipped one passes gradient only inside the clip range
    if (p1 >= p2) { pg += p1; dlogps[i] = -A * ratio; }
    else { pg += p2; dlogps[i] = ratio >= lo && ratio <= hi ? -A * ratio : 0; }
    if (p2 > p1) pgClip++;
    kl2 += diff * diff;
    ratioSum += ratio;
    if (inp.entropies) ent += inp.entropies[i];

    const v = inp.values[i], ov = inp.oldValues[i], ret = inp.returns[i];
    const vc = Math.min(Math.max(v, ov - cfg.cliprangeValue), ov + cfg.cliprangeValue);
    const v1 = (v - ret) ** 2, v2 = (vc - ret) ** 2;
    const vClipped = vc !== v; // d vc / d v = 0 outside [ov − c, ov + c]
    if (v1 >= v2) { vf += v1; dvalues[i] = 2 * (v - ret); }
    else { vf += v2; dvalues[i] = vClipped ? 0 : 2 * (vc - ret); }
    if (v2 > v1) vfClip++;
  }
  const pgLoss = pg / n, vfLoss = (0.5 * vf) / n;
  for (let i = 0; i < N; i++) {
    if (!inp.mask[i]) continue;
    dlogps[i] /= n;
    dvalues[i] *= (0.5 * cfg.vfCoef) / n;
  }
  const metrics: Record<string, number> = {
    // trl averages these two over every position, padding included (where diff = 0, ratio = 1)
    'policy/approxkl_avg': (0.5 * kl2) / N,
    'policy/clipfrac_avg': pgClip / n,
    'loss/policy_avg': pgLoss,
    'loss/value_avg': vfLoss,
    'val/clipfrac_avg': vfClip / n,
    'val/ratio': ratioSum / N,
  };
  if (inp.entropies) metrics['policy/entropy_avg'] = ent / n;
  return { loss: pgLoss + cfg.vfCoef * vfLoss, pgLoss, vfLoss, dlogps, dvalues, metrics };
}

export interface PpoLoopConfig {
  numPpoEpochs: number;
  numMiniBatches: number;
  gradAccumSteps: number;
}

/**
 * trl's update order over a rollout of `rows` completions: [epoch][mini-batch][micro-batch] → row
 * indices. `permute(n, epoch)` gives epoch's order (trl: np.random.permutation(local_batch_size)).
 */
export function ppoSchedule(rows: number, c: PpoLoopConfig, permute: (n: number, epoch: number) => number[]): number[][][][] {
  const per = c.numMiniBatches * c.gradAccumSteps;
  if (!(c.numPpoEpochs >= 1 && c.numMiniBatches >= 1 && c.gradAccumSteps >= 1)) throw new Error(`ppoSchedule: num_ppo_epochs ${c.numPpoEpochs}, num_mini_batches ${c.numMiniBatches} and gradient_accumulation_steps ${c.gradAccumSteps} must all be ≥ 1`);
  if (rows % per !== 0) throw new Error(`ppoSchedule: a rollout of ${rows} completions does not split into ${c.numMiniBatches} mini-batches × ${c.gradAccumSteps} micro-batches`);
  const mini = rows / c.numMiniBatches, micro = mini / c.gradAccumSteps;
  return Array.from({ length: c.numPpoEpochs }, (_, e) => {
    const order = permute(rows, e);
    if (order.length !== rows) throw new Error(`ppoSchedule: permutation of ${order.length} rows, expected ${rows}`);
    return Array.from({ length: c.numMiniBatches }, (_, b) =>
      Array.from({ length: c.gradAccumSteps }, (_, k) => order.slice(b * mini + k * micro, b * mini + (k + 1) * micro)));
  });
}

/**
 * Run a schedule: `micro(rows, accum)` does one micro-batch's forward, loss and backward (scaled by
 * 1/accum) and returns its metrics; `step()` is the optimizer step after each mini-batch. Returns
 * each metric averaged over all micro-batches (trl: *_stats.mean()), plus val/ratio_var (trl:
 * ratio_stats.var(), unbiased; 0 for a single micro-batch, where torch would give NaN).
 */
export async function ppoEpochs(
  schedule: number[][][][],
  micro: (rows: number[], accum: number) => Promise<Record<string, number>> | Record<string, number>,
  step: () => Promise<void> | void,
): Promise<Record<string, number>> {
  const stats: Record<string, number>[] = [];
  for (const epoch of schedule) {
    for (const mini of epoch) {
      for (const rows of mini) stats.push(await micro(rows, mini.length));
      await step();
    }
  }
  const out: Record<string, number> = {};
  for (const k of Object.keys(stats[0] ?? {})) out[k] = stats.reduce((s, m) => s + m[k], 0) / stats.length;
  const ratios = stats.map((m) => m['val/ratio']).filter((x) => x !== undefined);
  if (ratios.length) {
    const mean = ratios.reduce((a, b) => a + b, 0) / ratios.length;
    out['val/ratio_var'] = ratios.length > 1 ? ratios.reduce((s, x) => s + (x - mean) ** 2, 0) / (ratios.length - 1) : 0;
  }
  return out;
}
