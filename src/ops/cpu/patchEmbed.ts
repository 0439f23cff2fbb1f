// Reference Conv3d patch embedding with kernel == stride, written as the convolution itself
// (not as a matmul) so it checks the flattening: pixel row = (c, t, y, x), weight [Co, C, T, P, P].

export interface PatchDims { n: number; co: number; c: number; t: number; p: number }

export function patchEmbedCpu(pv: Float32Array, w: Float32Array, d: PatchDims): Float32Array {
  const { n, co, c, t, p } = d;
  const kin = c * t * p * p;
  const out = new Float32Array(n * co);
  for (let i = 0; i < n; i++) {
    for (let o = 0; o < co; o++) {
      let s = 0;
      for (let ci = 0; ci < c; ci++) for (let ti = 0; ti < t; ti++) for (let y = 0; y < p; y++) for (let x = 0; x < p; x++) {
        const f = ((ci * t + ti) * p + y) * p + x;
        s += pv[i * kin + f] * w[o * kin + f];
      }
      out[i * co + o] = s;
    }
  }
  return out;
}

export function patchEmbedBackwardCpu(dy: Float32Array, pv: Float32Array, w: Float32Array, d: PatchDims): { dweight: Float32Array; dpixelValues: Float32Array } {
  const { n, co, c, t, p } = d;
  const kin = c * t * p * p;
  const dweight = new Float32Array(co * kin), dpixelValues = new Float32Array(n * kin);
  const acc = new Float64Array(Math.max(co, n) * kin);
  for (let o = 0; o < co; o++) for (let i = 0; i < n; i++) {
    const g = dy[i * co + o];
    for (let f = 0; f < kin; f++) acc[o * kin + f] += g * pv[i * kin + f];
  }
  dweight.set(acc.subarray(0, co * kin));
  acc.fill(0);
  for (let i = 0; i < n; i++) for (let o = 0; o < co; o++) {
    const g = dy[i * co + o];
    for (let f = 0; f < kin; f++) acc[i * kin + f] += g * w[o * kin + f];
  }
  dpixelValues.set(acc.subarray(0, n * kin));
  return { dweight, dpixelValues };
}
