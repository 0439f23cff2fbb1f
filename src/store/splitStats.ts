// Pure pieces of the predictions over a split (no stores, no worker, unit-tested in Node): the
// split's numbers (session/eval.ts groundingMetrics, the same ones training's evaluation logs), the
// IoU histogram, the table's sort and the worst-IoU examples.
import { groundingMetrics } from '../session/eval.ts';
import type { SplitAnswer, SplitQuestion } from '../worker/api.ts';

export type Who = 'adapter' | 'base';

export interface Summary {
  /** questions answered */
  n: number;
  parseRate: number;
  meanIou: number;
  acc50: number;
  acc75: number;
}

/** parse rate, mean IoU, acc@0.5 and acc@0.75 of one model's answers (null: it answered none). */
export function summary(qs: SplitQuestion[], who: Who): Summary | null {
  const a = qs.map((q) => q[who]).filter((x): x is SplitAnswer => !!x);
  if (!a.length) return null;
  const m = groundingMetrics(a);
  return { n: a.length, parseRate: m['eval_grounding/parse_rate'], meanIou: m['eval_grounding/mean_iou'], acc50: m['eval_grounding/acc_iou50'], acc75: m['eval_grounding/acc_iou75'] };
}

/**
 * Counts of IoUs in `bins` equal bins over [0, 1]: bin i holds [i/bins, (i+1)/bins), the last one
 * also 1. An unparsed answer (IoU 0) counts in the first bin.
 */
export function histogram(ious: number[], bins = 10): number[] {
  const h = new Array<number>(bins).fill(0);
  for (const v of ious) {
    if (!Number.isFinite(v)) continue;
    h[Math.min(bins - 1, Math.max(0, Math.floor(v * bins)))]++;
  }
  return h;
}

export const iousOf = (qs: SplitQuestion[], who: Who): number[] => qs.map((q) => q[who]?.iou).filter((x): x is number => typeof x === 'number');

export type SortKey = 'index' | 'image' | 'question' | 'iou' | 'baseIou' | 'parsed' | 'answer';
export interface Sort {
  key: SortKey;
  desc: boolean;
}

const collator = new Intl.Collator('en', { numeric: true, sensitivity: 'base' });

function value(q: SplitQuestion, key: SortKey): string | number | undefined {
  const a = q.adapter ?? q.base;
  switch (key) {
    case 'index': return q.index;
    case 'image': return q.name;
    case 'question': return q.question;
    case 'iou': return a?.iou;
    case 'baseIou': return q.base?.iou;
    case 'parsed': return a ? (a.parsed ? 1 : 0) : undefined;
    case 'answer': return a?.text;
  }
}

/**
 * The table's rows sorted by one column ('iou', 'parsed' and 'answer' are the adapter's, or the
 * base model's when only it answered); missing values go last either way, ties keep split order.
 */
export function sortQuestions(qs: SplitQuestion[], s: Sort): SplitQuestion[] {
  const dir = s.desc ? -1 : 1;
  return [...qs].sort((x, y) => {
    const a = value(x, s.key), b = value(y, s.key);
    if (a === undefined || b === undefined) return a === b ? x.index - y.index : a === undefined ? 1 : -1;
    const c = typeof a === 'number' && typeof b === 'number' ? a - b : collator.compare(String(a), String(b));
    return c !== 0 ? dir * c : x.index - y.index;
  });
}

/** The k questions the given model answered worst: lowest IoU first, an unparsed answer before a parsed one of equal IoU, then split order. */
export function worstK(qs: SplitQuestion[], k: number, who: Who): SplitQuestion[] {
  return qs
    .filter((q) => q[who])
    .sort((x, y) => x[who]!.iou - y[who]!.iou || Number(x[who]!.parsed) - Number(y[who]!.parsed) || x.index - y.index)
    .slice(0, Math.max(0, k));
}
