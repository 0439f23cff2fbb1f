// Plain-TypeScript references for shaders/matmul.wgsl (f64 accumulation). Row-major arrays.

/** C[M,N] = alpha·op(A)·op(B) (+ bias) (+ C when `c` is given: accumulate). */
export function gemmCpu(
  a: Float32Array, b: Float32Array, M: number, N: number, K: number,
  opts: { transA?: boolean; transB?: boolean; alpha?: number; bias?: Float32Array; c?: Float32Array } = {},
): Float32Array {
  const { transA = false, transB = false, alpha = 1, bias, c } = opts;
  const out = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[transA ? k * M + m : m * K + k] * b[transB ? n * K + k : k * N + n];
      let v = alpha * s;
      if (bias) v += bias[n];
      if (c) v += c[m * N + n];
      out[m * N + n] = v;
    }
  }
  return out;
}

/** y[M,N] = x[M,K]·W[N,K]ᵀ (+ b) */
export function matmulCpu(x: Float32Array, w: Float32Array, M: number, N: number, K: number, bias?: Float32Array): Float32Array {
  return gemmCpu(x, w, M, N, K, { transB: true, bias });
}

/** dx[M,K] = dy[M,N]·W[N,K] */
export function matmulBackwardInputCpu(dy: Float32Array, w: Float32Array, M: number, N: number, K: number): Float32Array {
  return gemmCpu(dy, w, M, K, N);
}

/** dW[N,K] = dy[M,N]ᵀ·x[M,K] */
export function matmulBackwardWeightCpu(dy: Float32Array, x: Float32Array, M: number, N: number, K: number): Float32Array {
  return gemmCpu(dy, x, N, K, M, { transA: true });
}

/** db[N] = Σ_m dy[m, n] */
export function biasGradCpu(dy: Float32Array, M: number, N: number): Float32Array {
  const out = new Float32Array(N);
  for (let n = 0; n < N; n++) {
    let s = 0;
    for (let m = 0; m < M; m++) s += dy[m * N + n];
    out[n] = s;
  }
  return out;
}
