import { describe, expect, it } from 'vitest';
import { boxToOriginal, boxToResized, clampBox, formatGroundings, iou, parseGroundings, type Box } from './bbox.ts';
import { smartResize } from './image.ts';

describe('box transforms', () => {
  const original = { width: 1568, height: 1092 };
  const [h, w] = smartResize(original.height, original.width); // 812 x 1176
  const resized = { width: w, height: h };

  it('maps original pixels into the resized frame with rounding and clamping', () => {
    expect(resized).toEqual({ width: 1176, height: 812 });
    // 1176/1568 = 0.75, 812/1092 = 0.7436
    expect(boxToResized([100, 200, 301, 402], original, resized)).toEqual([75, 149, 226, 299]);
    expect(boxToResized([-10, -5, 2000, 1200], original, resized)).toEqual([0, 0, 1176, 812]);
    expect(boxToResized([300, 400, 100, 200], original, resized)).toEqual([75, 149, 225, 297]); // corners reordered
  });
  it('maps answers back to the original image', () => {
    const back = boxToOriginal([75, 149, 226, 299], resized, original);
    expect(back[0]).toBeCloseTo(100, 6);
    expect(back[2]).toBeCloseTo(301.33, 1);
    expect(back[1]).toBeCloseTo(149 * 1092 / 812, 6);
    expect(boxToOriginal([-3, 0, 5000, 5000], resized, original)).toEqual([0, 0, 1568, 1092]);
  });
  it('round-trips within the rounding error of the resized frame', () => {
    const sx = original.width / resized.width, sy = original.height / resized.height;
    for (const b of [[0, 0, 1568, 1092], [10.4, 20.6, 700.5, 900.2], [1500, 1000, 1567, 1091]] as Box[]) {
      const r = boxToOriginal(boxToResized(b, original, resized), resized, original);
      for (let i = 0; i < 4; i++) expect(Math.abs(r[i] - b[i])).toBeLessThanOrEqual((i % 2 ? sy : sx) / 2 + 1e-9);
    }
  });
  it('clamps and refuses bad sizes and coordinates', () => {
    expect(clampBox([5, 9, -1, 3], { width: 4, height: 8 })).toEqual([0, 3, 4, 8]);
    expect(() => boxToResized([0, 0, 1, 1], { width: 0, height: 5 }, resized)).toThrow(/0x5/);
    expect(() => boxToResized([0, NaN, 1, 1], original, resized)).toThrow(/non-finite/);
  });
});

describe('iou', () => {
  it('computes intersection over union', () => {
    expect(iou([0, 0, 10, 10], [0, 0, 10, 10])).toBe(1);
    expect(iou([0, 0, 10, 10], [5, 0, 15, 10])).toBeCloseTo(50 / 150, 12);
    expect(iou([0, 0, 10, 10], [20, 20, 30, 30])).toBe(0);
    expect(iou([0, 0, 0, 0], [0, 0, 0, 0])).toBe(0);
    expect(iou([0, 0, 4, 4], [1, 1, 3, 3])).toBe(4 / 16);
  });
});

describe('parseGroundings', () => {
  it('reads the fenced list Qwen2.5-VL writes', () => {
    const text = 'Sure.\n```json\n[\n\t{"bbox_2d": [135, 114, 1016, 672], "label": "cat"},\n\t{"bbox_2d": [1, 2, 3, 4], "label": "dog\'s tail"}\n]\n```\nDone.';
    expect(parseGroundings(text)).toEqual([
      { bbox: [135, 114, 1016, 672], label: 'cat' },
      { bbox: [1, 2, 3, 4], label: "dog's tail" },
    ]);
  });
  it('reads a bare object, python-style quotes, trailing commas, bbox alias, truncated lists', () => {
    expect(parseGroundings('{"bbox_2d": [1,2,3,4]}')).toEqual([{ bbox: [1, 2, 3, 4] }]);
    expect(parseGroundings("[{'bbox_2d': [5, 6, 7, 8], 'label': 'x',},]")).toEqual([{ bbox: [5, 6, 7, 8], label: 'x' }]);
    expect(parseGroundings('the box is {"bbox": ["10", 20, 30.5, 40], "label": "a"} ok')).toEqual([{ bbox: [10, 20, 30.5, 40], label: 'a' }]);
    expect(parseGroundings('[{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [5, 6, 7')).toEqual([{ bbox: [1, 2, 3, 4], label: 'a' }]);
    expect(parseGroundings('{"result": {"bbox_2d": [1, 2, 3, 4], "label": "}"}}')).toEqual([{ bbox: [1, 2, 3, 4], label: '}' }]);
  });
  it('ignores objects that are not boxes', () => {
    expect(parseGroundings('no boxes {here} or {"bbox_2d": [1, 2, 3]} or {"bbox_2d": [1, "a", 3, 4]}')).toEqual([]);
    expect(parseGroundings('')).toEqual([]);
  });
  it('formats boxes so that parsing gives them back', () => {
    const items = [{ bbox: [1, 2, 3, 4] as Box, label: 'a "quoted" label' }, { bbox: [5, 6, 7, 8] as Box }];
    const text = formatGroundings(items);
    expect(text).toBe('```json\n[\n\t{"bbox_2d": [1, 2, 3, 4], "label": "a \\"quoted\\" label"},\n\t{"bbox_2d": [5, 6, 7, 8]}\n]\n```');
    expect(parseGroundings(text)).toEqual(items);
    expect(formatGroundings(items, { fence: false }).startsWith('[\n')).toBe(true);
  });
});
