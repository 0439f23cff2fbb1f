// Dropout reference (plain TypeScript) on the mask of ../dropoutMask.ts (re-exported for the tests).
import { dropoutKeep, dropoutScale, dropoutThreshold } from '../dropoutMask.ts';
export { dropoutKeep, dropoutScale, dropoutStream, dropoutThreshold, hash3 } from '../dropoutMask.ts';

/** x · mask / (1 − p), exactly as the GPU computes it. */
export function dropoutCpu(x: ArrayLike<number>, p: number, seed: number, stream: number): Float32Array {
  const thr = dropoutThreshold(p), s = dropoutScale(p), out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = dropoutKeep(seed, stream, i, thr) ? Math.fround(x[i] * s) : 0;
  return out;
}
