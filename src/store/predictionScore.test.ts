import { describe, expect, it } from 'vitest';
import type { Box, Labels } from '../data/formats/types.ts';
import type { GenerateResult } from '../worker/api.ts';
import { matchedIou, meanIou, questionsOf, scoreAnswer } from './predictionScore.ts';

const box = (x1: number, y1: number, x2: number, y2: number, label: string, question = ''): Box => ({ id: `${x1}`, x1, y1, x2, y2, label, question });
const labels = (boxes: Box[], question = ''): Labels => ({ boxes, question, answer: '', chosen: '', rejected: '' });
const answer = (text: string, boxes: [number, number, number, number][]): GenerateResult => ({
  text, boxes: boxes.map((bbox) => ({ bbox })), resizedBoxes: boxes, resized: [{ width: 28, height: 28 }], tokens: 5, ms: 1,
});

describe('the questions of an image', () => {
  it('one per distinct box question, boxes grouped under it, in original pixels', () => {
    const img = { scale: 2, labels: labels([box(0, 0, 10, 10, 'cat', 'Where are the cats?'), box(20, 20, 30, 30, 'dog'), box(5, 5, 8, 8, 'cat', 'Where are the cats?')]) };
    const qs = questionsOf(img);
    expect(qs.map((q) => q.question)).toEqual(['Where are the cats?', questionsOf({ scale: 1, labels: labels([box(0, 0, 1, 1, 'dog')]) })[0].question]);
    expect(qs[0].boxes).toEqual([[0, 0, 20, 20], [10, 10, 16, 16]]);
    expect(qs[1].boxes).toEqual([[40, 40, 60, 60]]);
  });
  it('an image without boxes is asked its own question (or a default)', () => {
    expect(questionsOf({ scale: 1, labels: labels([], ' What is it? ') })).toEqual([{ question: 'What is it?', boxes: [] }]);
    expect(questionsOf({ scale: 1, labels: labels([]) })).toEqual([{ question: 'Describe this image.', boxes: [] }]);
  });
});

describe('scoring an answer', () => {
  const gt: [number, number, number, number][] = [[0, 0, 10, 10]];
  it('an answer with no parseable box is flagged and scores 0, not silently', () => {
    const s = scoreAnswer(gt, answer('I cannot see a cat here.', []));
    expect(s.noBox).toBe(true);
    expect(s.iou).toBe(0);
    expect(s.text).toBe('I cannot see a cat here.');
  });
  it('a box answer is scored by matched IoU; a text question (no labelled box) is not flagged', () => {
    const s = scoreAnswer(gt, answer('[{"bbox_2d": [0, 0, 10, 5]}]', [[0, 0, 10, 5]]));
    expect(s.noBox).toBe(false);
    expect(s.iou).toBeCloseTo(0.5, 12);
    const text = scoreAnswer([], answer('a cat', []));
    expect(text).toMatchObject({ noBox: false, iou: null });
  });
  it('matched IoU pairs each labelled box with a distinct prediction; missing ones count 0', () => {
    expect(matchedIou([[0, 0, 10, 10], [20, 20, 30, 30]], [[20, 20, 30, 30]])).toBeCloseTo(0.5, 12);
    expect(matchedIou([[0, 0, 10, 10]], [[0, 0, 10, 10], [0, 0, 10, 10]])).toBe(1);
    expect(matchedIou([], [[0, 0, 1, 1]])).toBeNull();
    // as the evaluation scores it: extra boxes cost too, and one labelled box takes the first box answered
    expect(matchedIou([[0, 0, 10, 10], [20, 20, 30, 30]], [[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])).toBeCloseTo(2 / 3, 12);
    expect(matchedIou([[0, 0, 10, 10]], [[50, 50, 60, 60], [0, 0, 10, 10]])).toBe(0);
  });
  it('the mean covers every question of every image, unscored ones left out', () => {
    const r = [
      { adapter: scoreAnswer(gt, answer('x', [[0, 0, 10, 10]])) },
      { adapter: scoreAnswer(gt, answer('none', [])) }, // the second question of the same image
      { adapter: scoreAnswer([], answer('text', [])) },
      {},
    ];
    expect(meanIou(r, 'adapter')).toBe(0.5);
    expect(meanIou(r, 'base')).toBeNull();
  });
});
