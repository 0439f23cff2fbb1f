import { describe, expect, it } from 'vitest';
import { lrFactor } from './schedule.ts';
import { Rng } from './rng.ts';

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

describe('rng', () => {
  it('is repeatable and resumable from its state', () => {
    const a = new Rng(42), b = new Rng(42);
    const xs = Array.from({ length: 5 }, () => a.next());
    expect(Array.from({ length: 5 }, () => b.next())).toEqual(xs);
    const st = a.state;
    const next = a.nextU32();
    expect(new Rng(st).nextU32()).toBe(next);
    expect(new Rng(1).next()).not.toBe(new Rng(2).next());
  });
  it('gives a permutation and roughly uniform values', () => {
    const r = new Rng(7);
    expect(r.permutation(10).sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let m = 0;
    for (let i = 0; i < 10000; i++) m += r.next();
    expect(m / 10000).toBeGreaterThan(0.48);
    expect(m / 10000).toBeLessThan(0.52);
  });
});
