// Reward functions for GRPO / PPO on grounding and short-answer data, combined with user weights the way
// trl combines reward_funcs with reward_weights: total = Σ_f w_f·r_f, skipping functions that do not
// apply to a sample (NaN, trl's None; nansum), so a mixed dataset can use all three.
//
// Boxes are compared in whatever frame the completion and the reference share: the model answers in the
// smart-resized frame, so references must be given in that frame too (synthetic.ts provides `boxResized`).

import { iou, matchedIouSum, parseGroundings, type Box } from '../data/bbox.ts';

export interface RewardReference {
  /** labelled box(es), same frame as the model's answers (resized); the IoU reward applies when present */
  boxes?: Box[];
  /** reference short answer; the exact-match reward applies when present */
  answer?: string;
}

/** (completion, reference) → reward, or NaN when the function does not apply to that sample */
export type RewardFn = (completion: string, reference: RewardReference) => number;

export interface RewardSpec {
  /** 'iou' | 'format' | 'exact' for the built-ins, or any name with `fn`; metrics use it: rewards/<name>/mean */
  name: string;
  weight: number;
  fn?: RewardFn;
}

export interface RewardsResult {
  /** [G] weighted sum over functions, NaN entries skipped (0 when none applies, as trl's nansum) */
  total: Float64Array;
  /** per function name: [G] unweighted values (NaN = not applicable) */
  perFunc: Record<string, Float64Array>;
}

/**
 * IoU reward, continuous in [0, 1]. One reference box: IoU of the first box parsed from the answer (0 if
 * none parses). Several: boxes are matched one to one greedily by IoU and the summed IoU is divided by
 * max(#reference, #predicted), so missing and extra boxes both cost.
 */
export function iouReward(completion: string, ref: RewardReference): number {
  const gt = ref.boxes;
  if (!gt || gt.length === 0) return NaN;
  return boxesIou(gt, parseGroundings(completion).map((g) => g.bbox));
}

/** iouReward's score of predicted boxes against reference boxes (≥ 1), for callers that hold boxes, not text (the studio's per-image predictions). */
export function boxesIou(gt: readonly Box[], pred: readonly Box[]): number {
  if (pred.length === 0) return 0;
  if (gt.length === 1) return iou(pred[0], gt[0]);
  return matchedIouSum(gt, pred) / Math.max(gt.length, pred.length);
}

function isBoxObject(v: unknown): boolean {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return false;
  const b = (v as Record<string, unknown>).bbox_2d;
  return Array.isArray(b) && b.length === 4 && b.every((x) => typeof x === 'number' && Number.isFinite(x));
}

/**
 * Format reward: 1 when the whole answer (optionally inside one ```json fence) is strict JSON: an object
 * with "bbox_2d" holding 4 finite numbers, or a non-empty list of such objects; else 0. Stricter than
 * parseGroundings on purpose: prose around the JSON, single quotes or trailing commas score 0.
 */
export function formatReward(completion: string): number {
  let s = completion.trim();
  const fence = /^```(?:json)?\s*\n?([\s\S]*?)\n?```$/.exec(s);
  if (fence) s = fence[1].trim();
  let v: unknown;
  try { v = JSON.parse(s); } catch { return 0; }
  if (Array.isArray(v)) return v.length > 0 && v.every(isBoxObject) ? 1 : 0;
  return isBoxObject(v) ? 1 : 0;
}

/** Trim, lowercase, collapse whitespace, strip trailing punctuation. */
export function normalizeAnswer(s: string): string {
  return s.trim().toLowerCase().replace(/\s+/g, ' ').replace(/[\s.,!?;:。，！？；：]+$/u, '');
}

/** Exact-match reward: 1 when the normalised answer equals the normalised reference, else 0. */
export function exactMatchReward(completion: string, ref: RewardReference): number {
  if (ref.answer === undefined) return NaN;
  return normalizeAnswer(completion) === normalizeAnswer(ref.answer) ? 1 : 0;
}

export const BUILTIN_REWARDS: Record<string, RewardFn> = {
  iou: iouReward,
  format: (c) => formatReward(c),
  exact: exactMatchReward,
};

/**
 * Rewards of G completions against their references (one per completion: repeat a prompt's reference
 * for each of its generations). Returns the weighted total [G] and each function's values [G].
 */
export function computeRewards(completions: string[], references: RewardReference[], specs: RewardSpec[]): RewardsResult {
  const G = completions.length;
  if (references.length !== G) throw new Error(`computeRewards: ${G} completions but ${references.length} references`);
  if (specs.length === 0) throw new Error('computeRewards: no reward function given');
  const perFunc: Record<string, Float64Array> = {};
  const total = new Float64Array(G);
  for (const spec of specs) {
    const fn = spec.fn ?? BUILTIN_REWARDS[spec.name];
    if (!fn) throw new Error(`computeRewards: unknown reward "${spec.name}" (built-ins: ${Object.keys(BUILTIN_REWARDS).join(', ')}; or pass fn)`);
    if (perFunc[spec.name]) throw new Error(`computeRewards: reward "${spec.name}" listed twice`);
    if (!Number.isFinite(spec.weight)) throw new Error(`computeRewards: reward "${spec.name}" has weight ${spec.weight}`);
    const v = new Float64Array(G);
    for (let g = 0; g < G; g++) {
      v[g] = fn(completions[g], references[g]);
      if (!Number.isNaN(v[g])) total[g] += spec.weight * v[g];
    }
    perFunc[spec.name] = v;
  }
  return { total, perFunc };
}
