// Plain-TypeScript building blocks of the reference model. JS arithmetic is f64, so every sum here
// accumulates in f64 and only the stored results are rounded to f32. Written independently of
// src/ops/cpu on purpose: the reference model is a second opinion on the kernels' references.

/** y[T, out] = x[T, in] · W[out, in]^T (+ b) */
export function linear(x: Float32Array, T: number, inF: number, w: Float32Array, outF: number, b?: Float32Array): Float32Array {
  if (x.length !== T * inF) throw new Error(`linear: x has ${x.length} values, expected [${T}, ${inF}]`);
  if (w.length !== outF * inF) throw new Error(`linear: weight has ${w.length} values, expected [${outF}, ${inF}]`);
  const y = new Float32Array(T * outF);
  for (let t = 0; t < T; t++) {
    const xo = t * inF;
    for (let o = 0; o < outF; o++) {
      const wo = o * inF;
      let s = b ? b[o] : 0;
      for (let i = 0; i < inF; i++) s += x[xo + i] * w[wo + i];
      y[t * outF + o] = s;
    }
  }
  return y;
}

/** y += scale · (x A^T) B^T, A [r, in], B [out, r] (a LoRA branch, dropout off) */
export function addLora(y: Float32Array, x: Float32Array, T: number, inF: number, outF: number, A: Float32Array, B: Float32Array, r: number, scale: number): void {
  const xa = new Float64Array(r);
  for (let t = 0; t < T; t++) {
    for (let k = 0; k < r; k++) {
      let s = 0;
      for (let i = 0; i < inF; i++) s += x[t * inF + i] * A[k * inF + i];
      xa[k] = s;
    }
    for (let o = 0; o < outF; o++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += xa[k] * B[o * r + k];
      y[t * outF + o] += scale * s;
    }
  }
}

/** y = w · x / sqrt(mean(x²) + eps) over rows of `dim` */
export function rmsnorm(x: Float32Array, w: Float32Array, dim: number, eps: number): Float32Array {
  const y = new Float32Array(x.length);
  for (let r = 0; r < x.length / dim; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] * x[r * dim + i];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) y[r * dim + i] = w[i] * (x[r * dim + i] * inv);
  }
  return y;
}

export const silu = (g: number) => g / (1 + Math.exp(-g));

/** silu(gate) · up */
export function swiglu(gate: Float32Array, up: Float32Array): Float32Array {
  const y = new Float32Array(gate.length);
  for (let i = 0; i < y.length; i++) y[i] = silu(gate[i]) * up[i];
  return y;
}

/**
 * erf to ~1e-15 (W. J. Cody's rational Chebyshev approximations, the ones glibc derives from).
 * A 1e-7 approximation would do for the tolerances, but the reference should not be the weak link.
 */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 0.5) {
    const t = x * x;
    const p = ((((1.857777061846031526730e-1 * t + 3.161123743870565596947) * t + 1.138641541510501556495e2) * t + 3.774852376853020208137e2) * t + 3.209377589138469472562e3);
    const q = ((((t + 2.360129095234412093499e1) * t + 2.440246379344441733056e2) * t + 1.282616526077372275645e3) * t + 2.844236833439170622273e3);
    return (x * p) / q;
  }
  return x < 0 ? -(1 - erfcPos(ax)) : 1 - erfcPos(ax);
}

function erfcPos(x: number): number {
  if (x < 4) {
    const p = [5.64188496988670089180e-1, 8.88314979438837594118, 6.61191906371416294775e1, 2.98635138197400131132e2, 8.81952221241769090411e2, 1.71204761263407058314e3, 2.05107837782607146532e3, 1.23033935479799725272e3, 2.15311535474403846343e-8];
    const q = [1.57449261107098347253e1, 1.17693950891312499305e2, 5.37181101862009857509e2, 1.62138957456669018874e3, 3.29079923573345962678e3, 4.36261909014324715820e3, 3.43936767414372163696e3, 1.23033935480374942043e3];
    let num = p[8] * x, den = x;
    for (let i = 0; i < 7; i++) {
      num = (num + p[i]) * x;
      den = (den + q[i]) * x;
    }
    const r = (num + p[7]) / (den + q[7]);
    return Math.exp(-x * x) * r;
  }
  if (x > 27) return 0;
  const p = [3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2];
  const q = [2.56852019228982242, 1.87295284992346725, 5.27905102951428412e-1, 6.05183413124413191e-2, 2.33520497626869185e-3];
  const z = 1 / (x * x);
  let num = p[5] * z, den = z;
  for (let i = 0; i < 4; i++) {
    num = (num + p[i]) * z;
    den = (den + q[i]) * z;
  }
  let r = (z * (num + p[4])) / (den + q[4]);
  r = (0.5641895835477562869 - r) / x; // 1/sqrt(pi) - r
  return Math.exp(-x * x) * r;
}

/** exact GELU 0.5·z·(1 + erf(z/√2)) in place */
export function geluInPlace(x: Float32Array): void {
  for (let i = 0; i < x.length; i++) x[i] = 0.5 * x[i] * (1 + erf(x[i] / Math.SQRT2));
}

/**
 * x [rows, heads, D] rotated in place: out = x·cos + rotate_half(x)·sin; `ang` [rows, D/2] are the
 * angles of the first half (both halves share them, as concat(freqs, freqs)).
 */
export function ropeInPlace(x: Float32Array, ang: Float64Array, rows: number, heads: number, D: number): void {
  const half = D / 2;
  for (let r = 0; r < rows; r++)
    for (let j = 0; j < half; j++) {
      const c = Math.cos(ang[r * half + j]), s = Math.sin(ang[r * half + j]);
      for (let h = 0; h < heads; h++) {
        const b = (r * heads + h) * D;
        const x1 = x[b + j], x2 = x[b + half + j];
        x[b + j] = x1 * c - x2 * s;
        x[b + half + j] = x2 * c + x1 * s;
      }
    }
}

/**
 * Softmax attention. q [L, Hq, D], k/v [L, Hkv, D] (row stride given by the head counts);
 * query head h reads kv head floor(h / (Hq/Hkv)). `keys(i)` gives the key range [lo, hi) of
 * query row i: causal → [0, i+1); varlen → its segment.
 */
export function attention(q: Float32Array, k: Float32Array, v: Float32Array, L: number, Hq: number, Hkv: number, D: number, keys: (i: number) => [number, number]): Float32Array {
  const out = new Float32Array(L * Hq * D);
  const group = Hq / Hkv, scale = 1 / Math.sqrt(D);
  const sc = new Float64Array(L);
  const acc = new Float64Array(D);
  for (let i = 0; i < L; i++) {
    const [lo, hi] = keys(i);
    for (let h = 0; h < Hq; h++) {
      const g = Math.floor(h / group);
      const qo = (i * Hq + h) * D;
      let mx = -Infinity;
      for (let j = lo; j < hi; j++) {
        const ko = (j * Hkv + g) * D;
        let s = 0;
        for (let d = 0; d < D; d++) s += q[qo + d] * k[ko + d];
        sc[j] = s * scale;
        if (sc[j] > mx) mx = sc[j];
      }
      let den = 0;
      acc.fill(0);
      for (let j = lo; j < hi; j++) {
        const p = Math.exp(sc[j] - mx);
        den += p;
        const vo = (j * Hkv + g) * D;
        for (let d = 0; d < D; d++) acc[d] += p * v[vo + d];
      }
      for (let d = 0; d < D; d++) out[qo + d] = acc[d] / den;
    }
  }
  return out;
}

/** segment of row i in cu_seqlens (non-causal varlen attention) */
export function segmentKeys(cu: ArrayLike<number>): (i: number) => [number, number] {
  const seg = new Int32Array(cu[cu.length - 1]);
  for (let s = 0; s + 1 < cu.length; s++) for (let i = cu[s]; i < cu[s + 1]; i++) seg[i] = s;
  return (i) => [cu[seg[i]], cu[seg[i] + 1]];
}

export function addInPlace(x: Float32Array, y: Float32Array): void {
  for (let i = 0; i < x.length; i++) x[i] += y[i];
}
