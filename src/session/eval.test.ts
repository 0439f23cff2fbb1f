// Grounding scores of the eval split: parse success and IoU per question, the split's rates.
import { describe, expect, it } from 'vitest';
import { formatGroundings, type Box } from '../data/bbox.ts';
import { groundingMetrics, scoreGrounding } from './eval.ts';

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
