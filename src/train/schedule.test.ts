import { describe, expect, it } from 'vitest';
import { lrFactor } from './schedule.ts';

describe('lr schedules (transformers semantics)', () => {
  it('linear with warmup', () => {
    const s = { kind: 'linear' as const, warmupSteps: 2, totalSteps: 10 };
    expect([0, 1, 2, 6, 10, 11].map((i) => lrFactor(s, i))).toEqual([0, 0.5, 1, 0.5, 0, 0]);
  });
  it('cosine with warmup', () => {
    const s = { kind: 'cosine' as const, warmupSteps: 1, totalSteps: 5 };
    expect(lrFactor(s, 1)).toBeCloseTo(1);
    expect(lrFactor(s, 3)).toBeCloseTo(0.5);
    expect(lrFactor(s, 5)).toBeCloseTo(0);
  });
  it('constant', () => {
    expect(lrFactor({ kind: 'constant', warmupSteps: 0, totalSteps: 3 }, 7)).toBe(1);
  });
});
