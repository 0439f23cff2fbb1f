import { describe, expect, it } from 'vitest';
import { chartLines, chartSpecs, counterpartOf, latestEval, type ChartRun } from './chartSeries.ts';
import { evalChartMetrics } from '../store/training.ts';

const s = (step: number[], value: number[] = step.map((x) => x / 10)) => ({ step, value });

const sft: ChartRun = {
  id: 'a', name: 'SFT #1', color: '#111111',
  metrics: {
    loss: s([1, 2, 3, 4]), lr: s([1, 2, 3, 4]), grad_norm: s([1, 2, 3, 4]), tokens_per_s: s([1, 2, 3, 4]), mean_token_accuracy: s([1, 2, 3, 4]),
    eval_loss: s([2, 4], [1.5, 1.2]), eval_mean_token_accuracy: s([2, 4]),
    'eval_grounding/parse_rate': s([2, 4], [0, 1]), 'eval_grounding/mean_iou': s([2, 4], [0, 0.4]),
    'eval_grounding/acc_iou50': s([2, 4], [0, 0]), 'eval_grounding/acc_iou75': s([2, 4], [0, 0]),
  },
};
const dpo: ChartRun = {
  id: 'b', name: 'DPO #2', color: '#222222',
  metrics: { loss: s([1, 2]), 'rewards/margins': s([1, 2]), 'rewards/accuracies': s([1, 2]), eval_loss: s([2]), 'eval_rewards/margins': s([2]), 'eval_rewards/accuracies': s([2]), 'eval_logps/chosen': s([2]) },
};

describe('charts of runs with held-out evaluations', () => {
  it('draws an eval metric in its training metric’s chart, the grounding metrics after the standard four', () => {
    const specs = chartSpecs([sft, dpo]);
    expect(specs.map((c) => [c.title, c.evalKey ?? null])).toEqual([
      ['Loss', 'eval_loss'], ['Learning rate', null], ['Grad norm', null], ['Tokens / s', null],
      ['Eval parse rate', null], ['Eval mean IoU', null], ['Eval acc@IoU 0.5', null], ['Eval acc@IoU 0.75', null],
      ['mean_token_accuracy', 'eval_mean_token_accuracy'], ['rewards/accuracies', 'eval_rewards/accuracies'], ['rewards/margins', 'eval_rewards/margins'],
      // no training counterpart in these runs: a chart of its own, last
      ['eval_logps/chosen', null],
    ]);
    // the learning rate is not smoothed, the rest is (eval lines by the same rule); the grounding shares are drawn on [0, 1]
    expect(specs.filter((c) => !c.smooth).map((c) => c.key)).toEqual(['lr']);
    expect(specs.filter((c) => c.range).map((c) => [c.key, c.range])).toEqual(['parse_rate', 'mean_iou', 'acc_iou50', 'acc_iou75'].map((k) => [`eval_grounding/${k}`, [0, 1]]));
  });

  it('a run without evaluations draws the same charts as before', () => {
    const plain: ChartRun = { ...sft, metrics: { loss: s([1]), lr: s([1]), grad_norm: s([1]), tokens_per_s: s([1]), mean_token_accuracy: s([1]) } };
    expect(chartSpecs([plain]).map((c) => c.key)).toEqual(['loss', 'lr', 'grad_norm', 'tokens_per_s', 'mean_token_accuracy']);
    expect(chartSpecs([plain]).some((c) => c.evalKey)).toBe(false);
  });

  it('overlays the runs, each training line followed by its eval line in the run’s colour', () => {
    const loss = chartSpecs([sft, dpo])[0];
    const lines = chartLines(loss, [sft, dpo]);
    expect(lines.map((l) => [l.id, l.label, l.color, !!l.eval])).toEqual([
      ['a', 'SFT #1', '#111111', false], ['a|eval', 'SFT #1 (eval)', '#111111', true],
      ['b', 'DPO #2', '#222222', false], ['b|eval', 'DPO #2 (eval)', '#222222', true],
    ]);
    expect(lines[1]).toMatchObject({ step: [2, 4], value: [1.5, 1.2] });
    // a grounding chart: one eval line per run; a run lacking the metric has an empty one (the chart skips it)
    const iou = chartSpecs([sft, dpo]).find((c) => c.key === 'eval_grounding/mean_iou')!;
    expect(chartLines(iou, [sft, dpo]).map((l) => [l.id, l.step.length, !!l.eval])).toEqual([['a', 2, true], ['b', 0, true]]);
  });

  it('pairs the RL eval reward with GRPO’s reward or PPO’s objective/scores', () => {
    expect(counterpartOf('eval_reward', new Set(['reward', 'loss']))).toBe('reward');
    expect(counterpartOf('eval_reward', new Set(['objective/scores']))).toBe('objective/scores');
    expect(counterpartOf('eval_reward', new Set(['loss']))).toBeUndefined();
    expect(counterpartOf('eval_rewards/iou/mean', new Set(['rewards/iou/mean']))).toBe('rewards/iou/mean');
    const ppo: ChartRun = { id: 'p', name: 'PPO', color: '#333333', metrics: { loss: s([1, 2]), 'objective/scores': s([1, 2]), eval_reward: s([2]) } };
    expect(chartSpecs([ppo]).find((c) => c.key === 'objective/scores')?.evalKey).toBe('eval_reward');
  });
});

describe('latest evaluation figures', () => {
  it('the metrics of the last eval step, in a fixed order with short labels', () => {
    expect(latestEval(sft.metrics)).toEqual({
      step: 4,
      figures: [
        { key: 'eval_loss', label: 'loss', value: 1.2 },
        { key: 'eval_mean_token_accuracy', label: 'token accuracy', value: 0.4 },
        { key: 'eval_grounding/parse_rate', label: 'parse rate', value: 1 },
        { key: 'eval_grounding/mean_iou', label: 'mean IoU', value: 0.4 },
        { key: 'eval_grounding/acc_iou50', label: 'acc@0.5', value: 0 },
        { key: 'eval_grounding/acc_iou75', label: 'acc@0.75', value: 0 },
      ],
    });
    expect(latestEval(dpo.metrics)?.figures.map((f) => f.label)).toEqual(['loss', 'rewards/accuracies', 'rewards/margins', 'logps/chosen']);
    expect(latestEval({ loss: s([1]) })).toBeUndefined();
    // a metric last reported at an earlier evaluation is not shown as if it were current
    expect(latestEval({ eval_loss: s([2, 4]), eval_reward: s([2]) })?.figures.map((f) => f.key)).toEqual(['eval_loss']);
  });

  it('keeps an evaluation’s finite eval_ metrics only', () => {
    expect(evalChartMetrics({ eval_loss: 1.5, 'eval_grounding/mean_iou': 0, eval_reward: NaN, loss: 2, step: 4 })).toEqual({ eval_loss: 1.5, 'eval_grounding/mean_iou': 0 });
  });
});
