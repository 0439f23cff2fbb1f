import { describe, expect, it } from 'vitest';
import { computeRewards, exactMatchReward, formatReward, iouReward, normalizeAnswer } from './rewards.ts';

const ANSWER = '{"bbox_2d": [10, 10, 30, 30], "label": "red circle"}';

describe('iouReward', () => {
  it('IoU of the parsed box against the reference; 0 when nothing parses', () => {
    expect(iouReward(ANSWER, { boxes: [[10, 10, 30, 30]] })).toBe(1);
    expect(iouReward(ANSWER, { boxes: [[20, 10, 40, 30]] })).toBeCloseTo(200 / 600, 14);
    expect(iouReward('```json\n[{"bbox_2d": [10, 10, 30, 30]}]\n```', { boxes: [[10, 10, 30, 20]] })).toBe(0.5);
    expect(iouReward('somewhere left', { boxes: [[0, 0, 1, 1]] })).toBe(0);
    expect(iouReward('{"bbox_2d": [1, 2, 3]}', { boxes: [[0, 0, 1, 1]] })).toBe(0);
    expect(iouReward(ANSWER, {})).toBeNaN();
  });
  it('several reference boxes: one-to-one matching, divided by the larger count', () => {
    const two = '[{"bbox_2d": [0, 0, 10, 10]}, {"bbox_2d": [20, 0, 30, 10]}]';
    expect(iouReward(two, { boxes: [[20, 0, 30, 10], [0, 0, 10, 10]] })).toBe(1);
    expect(iouReward('{"bbox_2d": [0, 0, 10, 10]}', { boxes: [[20, 0, 30, 10], [0, 0, 10, 10]] })).toBe(0.5);
  });
});

describe('formatReward', () => {
  it('1 only for strict bbox_2d JSON (object or list, optional ```json fence)', () => {
    expect(formatReward(ANSWER)).toBe(1);
    expect(formatReward(`  ${ANSWER}\n`)).toBe(1);
    expect(formatReward('```json\n[\n\t{"bbox_2d": [1, 2, 3, 4], "label": "x"}\n]\n```')).toBe(1);
    expect(formatReward('{"bbox_2d": [1.5, 2, 3, 4]}')).toBe(1);
    expect(formatReward(`The box is ${ANSWER}`)).toBe(0);
    expect(formatReward('{"bbox_2d": [1, 2, 3]}')).toBe(0);
    expect(formatReward('{"bbox_2d": [1, 2, 3, "4"]}')).toBe(0);
    expect(formatReward("{'bbox_2d': [1, 2, 3, 4]}")).toBe(0);
    expect(formatReward('[]')).toBe(0);
    expect(formatReward('{"bbox_2d": [1, 2, 3, 4]')).toBe(0);
  });
});

describe('exactMatchReward', () => {
  it('compares normalised answers', () => {
    expect(normalizeAnswer('  Two   Cats.\n')).toBe('two cats');
    expect(exactMatchReward('two cats!', { answer: 'Two cats' })).toBe(1);
    expect(exactMatchReward('two  cats', { answer: 'two dogs' })).toBe(0);
    expect(exactMatchReward('x', {})).toBeNaN();
  });
});

describe('computeRewards', () => {
  it('weighted total and per-function values; NaN (not applicable) skipped as trl nansum', () => {
    const completions = [ANSWER, 'red', 'The box is {"bbox_2d": [10, 10, 30, 20]}'];
    const refs = [{ boxes: [[10, 10, 30, 30]] as [number, number, number, number][] }, { answer: 'Red' }, { boxes: [[10, 10, 30, 30]] as [number, number, number, number][] }];
    const r = computeRewards(completions, refs, [{ name: 'iou', weight: 1 }, { name: 'format', weight: 0.5 }, { name: 'exact', weight: 2 }]);
    expect(Array.from(r.perFunc.iou)).toEqual([1, NaN, 0.5]);
    expect(Array.from(r.perFunc.format)).toEqual([1, 0, 0]);
    expect(Array.from(r.perFunc.exact)).toEqual([NaN, 1, NaN]);
    expect(Array.from(r.total)).toEqual([1.5, 2, 0.5]);
  });
  it('takes custom functions and refuses unknown ones', () => {
    const r = computeRewards(['abc'], [{}], [{ name: 'len', weight: 0.1, fn: (c) => c.length }]);
    expect(r.total[0]).toBeCloseTo(0.3, 14);
    expect(() => computeRewards(['a'], [{}], [{ name: 'bleu', weight: 1 }])).toThrow(/unknown reward "bleu"/);
    expect(() => computeRewards(['a'], [], [{ name: 'iou', weight: 1 }])).toThrow(/1 completions but 0 references/);
  });
});
