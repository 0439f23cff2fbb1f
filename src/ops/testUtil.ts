// Shared helpers of the kernel tests: deterministic inputs and the tolerance check of the golden
// README (max |got - exp| <= atol + rtol * max |exp|).
import { expect } from 'vitest';

/** n values in [-scale, scale) from a seeded LCG */
export function rand(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return ((s / 2 ** 32) * 2 - 1) * scale;
  });
}

export function expectClose(got: ArrayLike<number>, exp: ArrayLike<number>, what: string, atol = 1e-5, rtol = 1e-4): void {
  expect(got.length, what).toBe(exp.length);
  let err = 0, scale = 0;
  for (let i = 0; i < exp.length; i++) { err = Math.max(err, Math.abs(got[i] - exp[i])); scale = Math.max(scale, Math.abs(exp[i])); if (Number.isNaN(got[i])) err = Infinity; }
  expect(err, `${what}: max err ${err} vs scale ${scale}`).toBeLessThanOrEqual(atol + rtol * scale);
}
