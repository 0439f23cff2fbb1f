import { describe, expect, it } from 'vitest';
import type { SplitAnswer, SplitQuestion } from '../worker/api.ts';
import { histogram, iousOf, sortQuestions, summary, worstK } from './splitStats.ts';

const ans = (iou: number, parsed = iou > 0, text = `iou ${iou}`): SplitAnswer => ({ text, parsed, iou, boxes: parsed ? [[0, 0, 1, 1]] : [] });
const q = (index: number, name: string, question: string, adapter?: SplitAnswer, base?: SplitAnswer): SplitQuestion => ({
  index, imageId: `id-${name}`, name, question, where: `image "${name}"`, width: 10, height: 10, labelled: [[0, 0, 5, 5]], ...(adapter ? { adapter } : {}), ...(base ? { base } : {}),
});

const qs = [
  q(0, 'b.png', 'Where is the cat?', ans(0.8), ans(0.1)),
  q(1, 'a.png', 'Where is the dog?', ans(0, false, 'no idea'), ans(0.55)),
  q(2, 'c10.png', 'Where is the bird?', ans(0.3), ans(0, false)),
  q(3, 'c9.png', 'Where is the sun?', ans(1), ans(0.75)),
];

describe('the split summary', () => {
  it('parse rate, mean IoU, acc@0.5 and acc@0.75 per model, as the evaluation defines them', () => {
    expect(summary(qs, 'adapter')).toEqual({ n: 4, parseRate: 0.75, meanIou: (0.8 + 0 + 0.3 + 1) / 4, acc50: 0.5, acc75: 0.5 });
    const b = summary(qs, 'base')!;
    expect(b.meanIou).toBeCloseTo((0.1 + 0.55 + 0 + 0.75) / 4, 12);
    expect([b.parseRate, b.acc50, b.acc75]).toEqual([0.75, 0.5, 0.25]);
    expect(summary([q(0, 'x', 'y', ans(1))], 'base')).toBeNull();
  });
});

describe('the IoU histogram', () => {
  it('equal bins over [0, 1], the last one holding 1, unparsed answers in the first', () => {
    expect(histogram([0, 0.05, 0.1, 0.5, 0.99, 1], 10)).toEqual([2, 1, 0, 0, 0, 1, 0, 0, 0, 2]);
    expect(histogram([0.25, 0.5, 0.75], 4)).toEqual([0, 1, 1, 1]);
    expect(histogram([], 5)).toEqual([0, 0, 0, 0, 0]);
    expect(histogram(iousOf(qs, 'adapter'), 2)).toEqual([2, 2]);
    expect(iousOf([...qs, q(4, 'd', 'e', undefined, ans(0.2))], 'adapter')).toEqual([0.8, 0, 0.3, 1]);
  });
});

describe('the table sort', () => {
  const order = (key: Parameters<typeof sortQuestions>[1]['key'], desc = false, rows = qs) => sortQuestions(rows, { key, desc }).map((r) => r.index);
  it('by each column, both ways; names in natural order', () => {
    expect(order('iou')).toEqual([1, 2, 0, 3]);
    expect(order('iou', true)).toEqual([3, 0, 2, 1]);
    expect(order('baseIou')).toEqual([2, 0, 1, 3]);
    expect(order('image')).toEqual([1, 0, 3, 2]); // c9 before c10
    expect(order('question')).toEqual([2, 0, 1, 3]);
    expect(order('parsed')).toEqual([1, 0, 2, 3]); // ties keep split order
    expect(order('answer')).toEqual([2, 0, 3, 1]); // "no idea" after the "iou …" answers
    expect(order('index', true)).toEqual([3, 2, 1, 0]);
    expect(qs.map((r) => r.index)).toEqual([0, 1, 2, 3]); // the input is left alone
  });
  it('rows without the value go last either way; the base model stands in when only it answered', () => {
    const rows = [q(0, 'a', 'x', undefined, ans(0.4)), q(1, 'b', 'y', undefined, ans(0.2)), q(2, 'c', 'z')];
    expect(order('iou', false, rows)).toEqual([1, 0, 2]);
    expect(order('iou', true, rows)).toEqual([0, 1, 2]);
  });
});

describe('the worst examples', () => {
  it('lowest IoU first, unparsed before parsed at equal IoU, k at most', () => {
    const rows = [...qs, q(4, 'e', 'f', ans(0, true)), q(5, 'g', 'h', undefined, ans(0))];
    expect(worstK(rows, 3, 'adapter').map((r) => r.index)).toEqual([1, 4, 2]);
    expect(worstK(rows, 2, 'base').map((r) => r.index)).toEqual([2, 5]);
    expect(worstK(rows, 100, 'adapter')).toHaveLength(5);
    expect(worstK(rows, 0, 'adapter')).toEqual([]);
  });
});
