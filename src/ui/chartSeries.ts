// Which charts the Train screen draws and which lines each holds, from the runs' series (pure, so it is
// unit-tested without a browser). Training metrics keep trl's names; the held-out evaluations are
// kept beside them under trl's eval_ names (session/eval.ts). An evaluation metric with a training
// counterpart is drawn in that chart (eval_loss with loss, DPO's eval_rewards/margins with
// rewards/margins, GRPO's eval_reward with reward, PPO's with objective/scores); the grounding
// metrics, which have none, get charts of their own right after the standard four. Every run is
// overlaid, its eval line in the run's colour, dashed and with points (evaluations are sparse).
import type { Series } from '../store/runPersist.ts';

export interface ChartLine {
  id: string;
  label: string;
  color: string;
  step: number[];
  value: number[];
  /** a held-out evaluation's line */
  eval?: boolean;
}

export interface ChartSpec {
  /** the training metric (or, for an eval-only chart, the eval metric) */
  key: string;
  title: string;
  smooth: boolean;
  logY?: boolean;
  /** the eval metric drawn with it */
  evalKey?: string;
  /** a fixed y range (the grounding shares: [0, 1]) */
  range?: [number, number];
}

export interface ChartRun {
  id: string;
  name: string;
  color: string;
  metrics: Record<string, Series>;
}

export const STANDARD_CHARTS: ChartSpec[] = [
  { key: 'loss', title: 'Loss', smooth: true },
  { key: 'lr', title: 'Learning rate', smooth: false },
  { key: 'grad_norm', title: 'Grad norm', smooth: true },
  { key: 'tokens_per_s', title: 'Tokens / s', smooth: true },
];

/** The grounding evaluation: no training counterpart, a chart each, in this order. */
export const GROUNDING_CHARTS: ChartSpec[] = [
  { key: 'eval_grounding/parse_rate', title: 'Eval parse rate', smooth: true, range: [0, 1] },
  { key: 'eval_grounding/mean_iou', title: 'Eval mean IoU', smooth: true, range: [0, 1] },
  { key: 'eval_grounding/acc_iou50', title: 'Eval acc@IoU 0.5', smooth: true, range: [0, 1] },
  { key: 'eval_grounding/acc_iou75', title: 'Eval acc@IoU 0.75', smooth: true, range: [0, 1] },
];

/** eval metrics whose training counterpart has another name (the first one a run reports wins) */
const COUNTERPARTS: Record<string, string[]> = { eval_reward: ['reward', 'objective/scores'] };

const isEval = (k: string) => k.startsWith('eval_');

/** The training metric an eval metric is drawn with, among `trainKeys` (undefined: a chart of its own). */
export function counterpartOf(evalKey: string, trainKeys: ReadonlySet<string>): string | undefined {
  const names = COUNTERPARTS[evalKey] ?? [evalKey.slice('eval_'.length)];
  return names.find((k) => trainKeys.has(k));
}

/** The charts for these runs: the standard four, the grounding evaluation, then every other metric (sorted). */
export function chartSpecs(runs: readonly ChartRun[]): ChartSpec[] {
  const keys = new Set<string>();
  for (const r of runs) for (const k of Object.keys(r.metrics)) keys.add(k);
  const train = new Set([...keys].filter((k) => !isEval(k)));
  for (const c of STANDARD_CHARTS) train.add(c.key);
  const evalWith = new Map<string, string>();
  const evalOnly: string[] = [];
  for (const k of [...keys].filter(isEval).sort()) {
    const c = counterpartOf(k, train);
    if (c) evalWith.set(c, k);
    else if (!GROUNDING_CHARTS.some((g) => g.key === k)) evalOnly.push(k);
  }
  const withEval = (c: ChartSpec): ChartSpec => (evalWith.has(c.key) ? { ...c, evalKey: evalWith.get(c.key) } : c);
  const extra = [...train].filter((k) => !STANDARD_CHARTS.some((c) => c.key === k)).sort();
  return [
    ...STANDARD_CHARTS.map(withEval),
    ...GROUNDING_CHARTS.filter((g) => keys.has(g.key)),
    ...extra.map((k) => withEval({ key: k, title: k, smooth: true })),
    ...evalOnly.map((k) => ({ key: k, title: k, smooth: true })),
  ];
}

/** The lines of one chart: per run its training line, then its eval line (when the chart has one). */
export function chartLines(spec: ChartSpec, runs: readonly ChartRun[]): ChartLine[] {
  const empty: Series = { step: [], value: [] };
  const out: ChartLine[] = [];
  const evalOnly = isEval(spec.key);
  for (const r of runs) {
    const m = r.metrics[spec.key] ?? empty;
    out.push({ id: r.id, label: r.name, color: r.color, step: m.step, value: m.value, ...(evalOnly ? { eval: true } : {}) });
    if (spec.evalKey) {
      const e = r.metrics[spec.evalKey] ?? empty;
      out.push({ id: `${r.id}|eval`, label: `${r.name} (eval)`, color: r.color, step: e.step, value: e.value, eval: true });
    }
  }
  return out;
}

const EVAL_ORDER = [
  'eval_loss', 'eval_mean_token_accuracy', 'eval_grounding/parse_rate', 'eval_grounding/mean_iou', 'eval_grounding/acc_iou50', 'eval_grounding/acc_iou75',
  'eval_rewards/accuracies', 'eval_rewards/margins', 'eval_rewards/chosen', 'eval_rewards/rejected', 'eval_reward',
];
const EVAL_LABELS: Record<string, string> = {
  eval_loss: 'loss', eval_mean_token_accuracy: 'token accuracy', 'eval_grounding/parse_rate': 'parse rate', 'eval_grounding/mean_iou': 'mean IoU',
  'eval_grounding/acc_iou50': 'acc@0.5', 'eval_grounding/acc_iou75': 'acc@0.75', eval_reward: 'reward',
};

/** A run's latest evaluation as figures (the run summary): the metrics of its last eval step, in a fixed order. */
export function latestEval(metrics: Record<string, Series>): { step: number; figures: { key: string; label: string; value: number }[] } | undefined {
  const keys = Object.keys(metrics).filter((k) => isEval(k) && metrics[k].step.length > 0);
  if (!keys.length) return undefined;
  const step = Math.max(...keys.map((k) => metrics[k].step.at(-1)!));
  const rank = (k: string) => (EVAL_ORDER.includes(k) ? EVAL_ORDER.indexOf(k) : EVAL_ORDER.length);
  const at = keys.filter((k) => metrics[k].step.at(-1) === step).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  return { step, figures: at.map((k) => ({ key: k, label: EVAL_LABELS[k] ?? k.slice('eval_'.length), value: metrics[k].value.at(-1)! })) };
}
