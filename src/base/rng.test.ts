import { describe, expect, it } from 'vitest';
import { Rng, rngFor } from './rng.ts';

describe('rng', () => {
  it('is repeatable per seed and per named stream', () => {
    const a = new Rng(42), b = new Rng(42);
    const xs = Array.from({ length: 5 }, () => a.next());
    expect(Array.from({ length: 5 }, () => b.next())).toEqual(xs);
    expect(new Rng(1).next()).not.toBe(new Rng(2).next());
    expect(rngFor(0, 'a').next()).not.toBe(rngFor(0, 'b').next());
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
