// RMSNorm reference: y = w · x / sqrt(mean(x²) + eps) over the last dim, f64 accumulation.

export interface RmsNormCpu { y: Float32Array; rstd: Float32Array }

export function rmsnormCpu(x: ArrayLike<number>, weight: ArrayLike<number>, dim: number, eps: number): RmsNormCpu {
  const rows = x.length / dim;
  const y = new Float32Array(x.length), rstd = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] ** 2;
    const rs = 1 / Math.sqrt(ss / dim + eps);
    rstd[r] = rs;
    for (let i = 0; i < dim; i++) y[r * dim + i] = weight[i] * x[r * dim + i] * rs;
  }
  return { y, rstd };
}

/** dx = rstd · (g − x̂ · mean(g · x̂)), g = w · dy, x̂ = x · rstd; dweight = Σ_rows dy · x̂. */
export function rmsnormBackwardCpu(dy: ArrayLike<number>, x: ArrayLike<number>, weight: ArrayLike<number>, dim: number, eps: number): { dx: Float32Array; dweight: Float32Array } {
  const rows = x.length / dim;
  const dx = new Float32Array(x.length);
  const dw = new Float64Array(dim);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] ** 2;
    const rs = 1 / Math.sqrt(ss / dim + eps);
    let c = 0;
    for (let i = 0; i < dim; i++) c += weight[i] * dy[r * dim + i] * x[r * dim + i] * rs;
    c /= dim;
    for (let i = 0; i < dim; i++) {
      const xh = x[r * dim + i] * rs;
      dx[r * dim + i] = rs * (weight[i] * dy[r * dim + i] - xh * c);
      dw[i] += dy[r * dim + i] * xh;
    }
  }
  return { dx, dweight: Float32Array.from(dw) };
}
