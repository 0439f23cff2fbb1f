import { describe, expect, it } from 'vitest';
import { debiasedEma } from './smoothing.ts';

describe('debiasedEma (TensorBoard smoothing)', () => {
  it('weight 0 returns the raw values', () => {
    expect(debiasedEma([3, 1, 4, 1, 5], 0)).toEqual([3, 1, 4, 1, 5]);
  });

  it('is debiased: the first point equals the first value, later points follow the formula', () => {
    const got = debiasedEma([1, 2, 3], 0.5) as number[];
    // last: 0.5, 1.25, 2.125; debias: 1-0.5, 1-0.25, 1-0.125
    expect(got[0]).toBeCloseTo(1, 12);
    expect(got[1]).toBeCloseTo(1.25 / 0.75, 12);
    expect(got[2]).toBeCloseTo(2.125 / 0.875, 12);
  });

  it('matches a direct debiased EMA at weight 0.9 on a longer series', () => {
    const xs = Array.from({ length: 50 }, (_, i) => Math.sin(i) + i * 0.1);
    const got = debiasedEma(xs, 0.9) as number[];
    let m = 0;
    xs.forEach((x, i) => {
      m = 0.9 * m + 0.1 * x;
      expect(got[i]).toBeCloseTo(m / (1 - 0.9 ** (i + 1)), 10);
    });
  });

  it('keeps a constant series exact', () => {
    expect(debiasedEma([0.3, 0.3, 0.3, 0.3], 0.95)).toEqual([0.3, 0.3, 0.3, 0.3]);
  });

  it('passes NaN, Infinity and gaps through without disturbing the average', () => {
    const got = debiasedEma([1, NaN, 2, null, Infinity, 3], 0.5);
    const clean = debiasedEma([1, 2, 3], 0.5);
    expect(got[1]).toBeNaN();
    expect(got[3]).toBeNull();
    expect(got[4]).toBe(Infinity);
    expect([got[0], got[2], got[5]]).toEqual(clean);
  });

  it('clamps the weight to [0, 0.999] and handles an empty series', () => {
    expect(debiasedEma([], 0.6)).toEqual([]);
    expect(debiasedEma([1, 2], -1)).toEqual([1, 2]);
    const hi = debiasedEma([1, 2], 5) as number[];
    expect(hi[0]).toBeCloseTo(1, 12);
    expect(hi[1]).toBeGreaterThan(1);
    expect(hi[1]).toBeLessThan(2);
  });
});
