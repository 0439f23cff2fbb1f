import { describe, expect, it } from 'vitest';
import { ortAgrees } from './attention.ts';

// The bench withholds a peer's attention figure when its output is not ours (ORT Web 1.30's
// subgroup attention kernels on SwiftShader are off by ~0.5 at T ≥ 64): the rule that decides it.
describe('ortAgrees', () => {
  const ours = Float32Array.from([0.5, -2, 1, 0.25]);
  it('accepts rounding-level differences (1e-2 of the largest |ours| + 1e-4)', () => {
    expect(ortAgrees(ours, ours)).toBe(true);
    expect(ortAgrees(ours.map((x) => x + 0.0199), ours)).toBe(true);
  });
  it('refuses a wrong answer, a shorter one and NaN', () => {
    expect(ortAgrees(ours.map((x, i) => (i === 2 ? x + 0.03 : x)), ours)).toBe(false);
    expect(ortAgrees(ours.slice(0, 3), ours)).toBe(false);
    expect(ortAgrees(ours.map((x, i) => (i === 1 ? NaN : x)), ours)).toBe(false);
  });
});
