// Exact GELU reference: y = 0.5 · x · (1 + erf(x/√2)) = x · Φ(x), in f64.

/** erfc in f64 (≈1e-15 relative): series for |x| < 3, continued fraction beyond. */
export function erfc64(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x < 0) return 2 - erfc64(-x);
  if (x < 3) {
    // erf(x) = 2/√π · e^{-x²} · Σ x^{2n+1} 2^n / (2n+1)!!  (all terms positive: no cancellation)
    let term = x, sum = x;
    for (let n = 1; n < 200 && term > 1e-17 * sum; n++) sum += (term *= (2 * x * x) / (2 * n + 1));
    return 1 - (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum;
  }
  // erfc(x) = e^{-x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), Lentz's method
  let f = x, c = x, d = 0;
  for (let k = 1; k < 500; k++) {
    d = 1 / (x + (k / 2) * d);
    c = x + k / 2 / c;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return Math.exp(-x * x) / Math.sqrt(Math.PI) / f;
}

export const erf64 = (x: number): number => 1 - erfc64(x);

/** Standard normal CDF Φ(x) = erfc(−x/√2)/2, accurate in both tails. */
export const normCdf = (x: number): number => 0.5 * erfc64(-x / Math.SQRT2);

export function geluCpu(x: ArrayLike<number>): Float32Array {
  const y = new Float32Array(x.length);
  for (let i = 0; i < y.length; i++) y[i] = x[i] * normCdf(x[i]);
  return y;
}

/** dx = dy · (Φ(x) + x · φ(x)), φ the standard normal density. */
export function geluBackwardCpu(dy: ArrayLike<number>, x: ArrayLike<number>): Float32Array {
  const dx = new Float32Array(x.length);
  for (let i = 0; i < dx.length; i++) {
    const v = x[i];
    dx[i] = dy[i] * (normCdf(v) + (v * Math.exp(-0.5 * v * v)) / Math.sqrt(2 * Math.PI));
  }
  return dx;
}
