// Grounding scores of the eval split: parse success and IoU per question, the split's rates.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatGroundings, type Box } from '../data/bbox.ts';
import { loadDefaultTokenizer, type QwenTokenizer } from '../data/tokenizer.ts';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { DEFAULT_CONFIG, mergeConfig, type Method } from '../config/config.ts';
import { loadModel, loraConfigOf } from './model.ts';
import { prepareExamples } from './examples.ts';
import { syntheticSources } from './dataset.ts';
import { evaluate, groundingMetrics, scoreGrounding } from './eval.ts';

const ref: Box[] = [[10, 10, 50, 50]];
describe('grounding metrics', () => {
  it('scores a completion: parsed or not, IoU against the labelled boxes', () => {
    const exact = scoreGrounding(0, formatGroundings([{ bbox: [10, 10, 50, 50], label: 'cat' }]), ref);
    expect(exact).toMatchObject({ parsed: true, iou: 1, predicted: [[10, 10, 50, 50]] });
    const half = scoreGrounding(1, formatGroundings([{ bbox: [10, 10, 50, 30] }]), ref);
    expect(half.parsed).toBe(true);
    expect(half.iou).toBeCloseTo(0.5, 10);
    expect(scoreGrounding(2, 'a cat, somewhere', ref)).toMatchObject({ parsed: false, iou: 0, predicted: [] });
    // one labelled box: the first box answered counts (as the IoU reward); several: matched one to one, summed IoU over the larger count
    expect(scoreGrounding(3, formatGroundings([{ bbox: [60, 60, 80, 80] }, { bbox: [10, 10, 50, 50] }]), ref).iou).toBe(0);
    expect(scoreGrounding(4, formatGroundings([{ bbox: [10, 10, 50, 50] }]), [...ref, [60, 60, 80, 80]]).iou).toBeCloseTo(0.5, 10);
  });
  it('averages over the split: parse rate, mean IoU, accuracy at IoU ≥ 0.5 and ≥ 0.75', () => {
    const q = [scoreGrounding(0, formatGroundings([{ bbox: [10, 10, 50, 50] }]), ref), scoreGrounding(1, formatGroundings([{ bbox: [10, 10, 50, 30] }]), ref), scoreGrounding(2, 'no box', ref), scoreGrounding(3, formatGroundings([{ bbox: [10, 10, 50, 40] }]), ref)];
    const m = groundingMetrics(q);
    expect(m['eval_grounding/parse_rate']).toBe(0.75);
    expect(m['eval_grounding/mean_iou']).toBeCloseTo((1 + 0.5 + 0 + 0.75) / 4, 10);
    expect(m['eval_grounding/acc_iou50']).toBe(0.75);
    expect(m['eval_grounding/acc_iou75']).toBe(0.5);
    expect(groundingMetrics([])).toEqual({});
  });
});

// The model paths on the built-in tiny model: a fresh adapter (B = 0) is the reference itself, so
// DPO's eval rewards and margins are exactly 0 and its loss ln 2; GRPO's eval reward is the rewards' mean.
describe('evaluate on the tiny model', () => {
  let loaded: Awaited<ReturnType<typeof loadModel>>;
  let tok: QwenTokenizer;
  beforeAll(async () => {
    await nodeGpu();
    tok = await loadDefaultTokenizer();
    loaded = await loadModel({ source: 'tiny' }, {}, { lora: loraConfigOf({ ...DEFAULT_CONFIG.lora, r: 4 }), loraSeed: 1, tokenizer: tok });
  }, 120_000);
  afterAll(async () => {
    loaded?.model.dispose();
    await closeGpu();
  });
  const examples = (method: Method, n: number) => prepareExamples(syntheticSources(method, n), { method, data: DEFAULT_CONFIG.data, maxNewTokens: 8, tokenizer: tok }).examples;
  const config = (method: Method) => mergeConfig(DEFAULT_CONFIG, { method, eval: { evalMaxNewTokens: 8 } });

  it('DPO: eval rewards, accuracies and margins under trl names', async () => {
    const r = await evaluate({ model: loaded.model, tokenizer: tok, examples: examples('dpo', 2), config: config('dpo') });
    expect(r.metrics['eval_loss']).toBeCloseTo(Math.log(2), 6);
    expect(r.metrics['eval_rewards/margins']).toBeCloseTo(0, 6);
    expect(r.metrics['eval_rewards/chosen']).toBeCloseTo(0, 6);
    expect(r.metrics['eval_rewards/accuracies']).toBe(0);
    expect(r.metrics['eval_logps/chosen']).toBeLessThan(0);
  }, 300_000);
  it('GRPO: mean eval reward over greedy completions, and the grounding scores of their boxes', async () => {
    const r = await evaluate({ model: loaded.model, tokenizer: tok, examples: examples('grpo', 2), config: config('grpo') });
    expect(r.questions.length).toBe(2);
    const iou = r.questions.reduce((a, q) => a + q.iou, 0) / 2;
    expect(r.metrics['eval_rewards/iou/mean']).toBeCloseTo(iou, 10);
    expect(r.metrics['eval_grounding/mean_iou']).toBeCloseTo(iou, 10);
    expect(r.metrics['eval_reward']).toBeCloseTo(iou + r.metrics['eval_rewards/format/mean'], 10);
    expect(r.metrics['eval_grounding/parse_rate']).toBe(r.questions.filter((q) => q.parsed).length / 2);
  }, 300_000);
});
