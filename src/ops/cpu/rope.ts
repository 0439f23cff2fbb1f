// Rotary reference (plain TypeScript): out = x·cos + rotate_half(x)·sin on half tables [rows, D/2]
// built by ../ropeTables.ts (re-exported here for the tests).
export { expandHalf, mropeCosSin, visionCosSin, visionPatchPos, visionRopeFreqs, windowOrderPatchPos, type CosSin } from '../ropeTables.ts';

/** x [rows, heads, D]; sign −1 applies the transpose (the backward). */
function rotate(x: ArrayLike<number>, cos: ArrayLike<number>, sin: ArrayLike<number>, heads: number, headDim: number, sign: number): Float32Array {
  const half = headDim / 2, rows = x.length / (heads * headDim);
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++)
    for (let h = 0; h < heads; h++)
      for (let j = 0; j < half; j++) {
        const b = (r * heads + h) * headDim, c = cos[r * half + j], s = sign * sin[r * half + j];
        const x1 = x[b + j], x2 = x[b + half + j];
        out[b + j] = x1 * c - x2 * s;
        out[b + half + j] = x2 * c + x1 * s;
      }
  return out;
}

export function ropeApplyCpu(x: ArrayLike<number>, cos: ArrayLike<number>, sin: ArrayLike<number>, heads: number, headDim: number): Float32Array {
  return rotate(x, cos, sin, heads, headDim, 1);
}

/** dx = dy·cos + rotate_halfᵀ(dy)·sin, rotate_halfᵀ(v) = concat(v[D/2:], −v[:D/2]): a rotation by −angle. */
export function ropeBackwardCpu(dy: ArrayLike<number>, cos: ArrayLike<number>, sin: ArrayLike<number>, heads: number, headDim: number): Float32Array {
  return rotate(dy, cos, sin, heads, headDim, -1);
}
