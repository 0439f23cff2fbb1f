// Supervised fine-tuning loss: masked next-token negative log-likelihood, as transformers' Trainer
// (and trl's SFTTrainer) compute it: cross_entropy(logits[:-1], labels[1:], ignore_index=-100, mean).
//
// Split of work: the GPU runs the forward, then a chunked log-softmax gather gives, for every logits
// row t, logp[t] = log_softmax(logits[t])[target[t]] with target[t] = labels[t+1] (labels are not
// shifted in the sample; row t predicts token t+1), plus a flag hit[t] = (argmax logits[t] == target).
// Those [N] numbers come back to the CPU; this file turns them into the loss, the metrics and
// dlogps = d loss / d logp[t], which goes back up for the backward (dlogits = dlogp·(onehot − softmax)).

import { IGNORE_INDEX } from '../data/template.ts';

export interface SftTargets {
  /** [L−1]: the token each logits row predicts (labels[t+1]); IGNORE_INDEX replaced by 0 (any id works: masked). */
  targets: Int32Array;
  /** [L−1]: 1 where labels[t+1] is trained, else 0. */
  mask: Uint8Array;
}

/** Targets of logits rows 0..L−2 of one sequence from its unshifted labels [L]. */
export function sftTargets(labels: ArrayLike<number>): SftTargets {
  const n = Math.max(0, labels.length - 1);
  const targets = new Int32Array(n), mask = new Uint8Array(n);
  for (let t = 0; t < n; t++) {
    const y = labels[t + 1];
    if (y !== IGNORE_INDEX) { targets[t] = y; mask[t] = 1; }
  }
  return { targets, mask };
}

export interface SftInput {
  /** [N] log-prob of each row's target token (any N: one sequence, or a flattened padded batch). */
  logps: ArrayLike<number>;
  /** [N] 1 on trained rows, 0 elsewhere (prompt, image, padding). */
  mask: ArrayLike<number>;
  /** [N] optional 1 where the row's argmax equals its target (for mean_token_accuracy). */
  hits?: ArrayLike<number>;
  /** [N] optional entropy of each row's distribution (for the `entropy` metric). */
  entropies?: ArrayLike<number>;
  /**
   * Divisor of the summed NLL; default: this batch's kept-token count. With gradient accumulation
   * pass the kept-token count of all accumulated micro-batches (transformers' num_items_in_batch), so
   * the accumulated gradient equals the gradient of one big batch.
   */
  normalizer?: number;
  /** Input tokens of the batch (attention-mask sum) for `num_tokens`; default: the kept-token count. */
  inputTokens?: number;
}

export interface SftResult {
  /** Σ −logp·mask / normalizer */
  loss: number;
  /** [N] d loss / d logp: −mask/normalizer */
  dlogps: Float64Array;
  /** Trained tokens in this batch. */
  numKept: number;
  /**
   * trl names. `num_tokens` is this batch's count; trl logs a running total of input tokens, so the
   * training loop sums it over steps. `mean_token_accuracy` only with hits, `entropy` only with entropies.
   */
  metrics: { loss: number; num_tokens: number; mean_token_accuracy?: number; entropy?: number };
}

export function sftLoss(inp: SftInput): SftResult {
  const { logps, mask, hits, entropies } = inp;
  const n = logps.length;
  if (mask.length !== n) throw new Error(`sftLoss: mask has ${mask.length} entries, logps ${n}`);
  if (hits && hits.length !== n) throw new Error(`sftLoss: hits has ${hits.length} entries, logps ${n}`);
  if (entropies && entropies.length !== n) throw new Error(`sftLoss: entropies has ${entropies.length} entries, logps ${n}`);
  let kept = 0, nll = 0, hit = 0, ent = 0;
  for (let t = 0; t < n; t++) {
    if (!mask[t]) continue;
    kept++;
    nll -= logps[t];
    if (hits) hit += hits[t] ? 1 : 0;
    if (entropies) ent += entropies[t];
  }
  const norm = inp.normalizer ?? kept;
  if (kept > 0 && !(norm > 0)) throw new Error(`sftLoss: normalizer must be positive, got ${norm}`);
  // No kept token (a sample whose answer was cut off): loss 0 and no gradient, rather than 0/0.
  const loss = kept > 0 ? nll / norm : 0;
  const dlogps = new Float64Array(n);
  if (kept > 0) for (let t = 0; t < n; t++) if (mask[t]) dlogps[t] = -1 / norm;
  const metrics: SftResult['metrics'] = { loss, num_tokens: inp.inputTokens ?? kept };
  if (hits) metrics.mean_token_accuracy = kept > 0 ? hit / kept : 0;
  if (entropies) metrics.entropy = kept > 0 ? ent / kept : 0;
  return { loss, dlogps, numKept: kept, metrics };
}
