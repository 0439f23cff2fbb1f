// Direct Preference Optimization loss, as trl's DPOTrainer defines it (loss types sigmoid, hinge, ipo).
//
// Inputs are per-token log-probs of the completion tokens (the GPU's log-softmax gather; token k of a
// completion sits at index P+k of prompt+completion and is predicted by logits row P+k−1), for the
// policy (base + LoRA) and the reference (same model, LoRA off; constants). A sequence's log-prob is the
// SUM over its completion tokens (no length normalisation), except for ipo, where trl averages.
//
//   m = (πc − rc) − (πr − rr)                       (the "logits" of trl's dpo_loss)
//   sigmoid: −(1−ls)·log σ(β·m) − ls·log σ(−β·m)    ls = label_smoothing (conservative DPO)
//   hinge:   relu(1 − β·m)
//   ipo:     (m − 1/(2β))²
// The batch loss is the mean over pairs. rewards/chosen = β·(πc − rc), rewards/rejected = β·(πr − rr).
// Gradients are with respect to the policy's per-token log-probs (the reference carries none).
//
// The scored completion is exactly trl's (DPOTrainer, conversational data, trl ≥ 1.x): trl renders
// prompt (with the generation prompt) and prompt + answer with the chat template, takes the common
// prefix as the prompt and the rest as the completion — for Qwen's template "answer<|im_end|>\n" — and
// tokenizes it without special tokens added. So the completion is answer, <|im_end|> and the "\n" after
// it (completionIds); no EOS is appended for conversational data.
import type { QwenTokenizer } from '../data/tokenizer.ts';

/** Token ids trl's DPOTrainer scores for an assistant answer: answer + <|im_end|> + "\n". */
export function completionIds(tokenizer: Pick<QwenTokenizer, 'encode' | 'special'>, answer: string): number[] {
  return [...tokenizer.encode(answer), tokenizer.special.imEnd, ...tokenizer.encode('\n')];
}

export type DpoLossType = 'sigmoid' | 'hinge' | 'ipo';

export interface DpoConfig {
  beta: number;
  lossType?: DpoLossType;
  /** sigmoid only; 0 = plain DPO */
  labelSmoothing?: number;
}

export interface DpoInput {
  /** B pairs; each entry holds that sequence's completion-token log-probs (real tokens only). */
  policyChosen: ArrayLike<number>[];
  policyRejected: ArrayLike<number>[];
  refChosen: ArrayLike<number>[];
  refRejected: ArrayLike<number>[];
}

export interface DpoResult {
  /** mean over pairs */
  loss: number;
  /** [B] per-pair losses */
  losses: Float64Array;
  /** [B] β·(πc − rc) and β·(πr − rr) */
  chosenRewards: Float64Array;
  rejectedRewards: Float64Array;
  /** [B] sequence log-probs of the policy (sums; means for ipo) */
  chosenLogps: Float64Array;
  rejectedLogps: Float64Array;
  /** d loss / d policy per-token logps, same ragged shape as policyChosen / policyRejected */
  dChosen: Float64Array[];
  dRejected: Float64Array[];
  /** trl's names (means over the batch) */
  metrics: {
    'rewards/chosen': number;
    'rewards/rejected': number;
    'rewards/accuracies': number;
    'rewards/margins': number;
    'logps/chosen': number;
    'logps/rejected': number;
  };
}

/** log σ(x), stable for large |x| */
export function logSigmoid(x: number): number {
  return x >= 0 ? -Math.log1p(Math.exp(-x)) : x - Math.log1p(Math.exp(x));
}

export function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

function seqLogp(v: ArrayLike<number>, average: boolean): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i];
  return average ? (v.length > 0 ? s / v.length : 0) : s;
}

export function dpoLoss(inp: DpoInput, cfg: DpoConfig): DpoResult {
  const B = inp.policyChosen.length;
  for (const [name, list] of Object.entries({ policyRejected: inp.policyRejected, refChosen: inp.refChosen, refRejected: inp.refRejected })) {
    if (list.length !== B) throw new Error(`dpoLoss: ${name} has ${list.length} sequences, policyChosen ${B}`);
  }
  for (let i = 0; i < B; i++) {
    if (inp.refChosen[i].length !== inp.policyChosen[i].length) throw new Error(`dpoLoss: pair ${i}: chosen has ${inp.policyChosen[i].length} policy and ${inp.refChosen[i].length} reference token logps`);
    if (inp.refRejected[i].length !== inp.policyRejected[i].length) throw new Error(`dpoLoss: pair ${i}: rejected has ${inp.policyRejected[i].length} policy and ${inp.refRejected[i].length} reference token logps`);
  }
  if (B === 0) throw new Error('dpoLoss: empty batch');
  const type = cfg.lossType ?? 'sigmoid';
  const beta = cfg.beta, ls = cfg.labelSmoothing ?? 0;
  if (!(beta > 0)) throw new Error(`dpoLoss: beta must be positive, got ${beta}`);
  if (ls !== 0 && type !== 'sigmoid') throw new Error(`dpoLoss: label_smoothing is only defined for the sigmoid loss, not ${type}`);
  const avg = type === 'ipo';

  const losses = new Float64Array(B), chosenRewards = new Float64Array(B), rejectedRewards = new Float64Array(B);
  const chosenLogps = new Float64Array(B), rejectedLogps = new Float64Array(B);
  const dChosen: Float64Array[] = [], dRejected: Float64Array[] = [];
  for (let i = 0; i < B; i++) {
    const pc = seqLogp(inp.policyChosen[i], avg), pr = seqLogp(inp.policyRejected[i], avg);
    const rc = seqLogp(inp.refChosen[i], avg), rr = seqLogp(inp.refRejected[i], avg);
    const m = pc - rc - (pr - rr);
    let loss: number, dm: number; // dm = d loss_i / d m
    if (type === 'sigmoid') {
      const z = beta * m;
      loss = -(1 - ls) * logSigmoid(z) - ls * logSigmoid(-z);
      dm = beta * (-(1 - ls) * sigmoid(-z) + ls * sigmoid(z));
    } else if (type === 'hinge') {
      loss = Math.max(0, 1 - beta * m);
      dm = 1 - beta * m > 0 ? -beta : 0;
    } else if (type === 'ipo') {
      const d = m - 1 / (2 * beta);
      loss = d * d;
      dm = 2 * d;
    } else throw new Error(`dpoLoss: unknown loss type "${type as string}" (sigmoid, hinge, ipo)`);
    losses[i] = loss;
    chosenLogps[i] = pc;
    rejectedLogps[i] = pr;
    chosenRewards[i] = beta * (pc - rc);
    rejectedRewards[i] = beta * (pr - rr);
    // m grows with πc and falls with πr; πc is a sum (or mean) of the chosen token logps.
    const g = dm / B;
    const nc = inp.policyChosen[i].length, nr = inp.policyRejected[i].length;
    dChosen.push(new Float64Array(nc).fill(avg ? g / nc : g));
    dRejected.push(new Float64Array(nr).fill(avg ? -g / nr : -g));
  }
  const mean = (a: ArrayLike<number>) => { let s = 0; for (let i = 0; i < a.length; i++) s += a[i]; return s / a.length; };
  let acc = 0, margin = 0;
  for (let i = 0; i < B; i++) {
    acc += chosenRewards[i] > rejectedRewards[i] ? 1 : 0;
    margin += chosenRewards[i] - rejectedRewards[i];
  }
  const loss = mean(losses);
  return {
    loss, losses, chosenRewards, rejectedRewards, chosenLogps, rejectedLogps, dChosen, dRejected,
    metrics: {
      'rewards/chosen': mean(chosenRewards),
      'rewards/rejected': mean(rejectedRewards),
      'rewards/accuracies': acc / B,
      'rewards/margins': margin / B,
      'logps/chosen': mean(chosenLogps),
      'logps/rejected': mean(rejectedLogps),
    },
  };
}
