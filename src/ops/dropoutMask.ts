// The dropout mask of shaders/dropout.wgsl in plain TypeScript (bit-identical): element i of a
// module's input is kept when xxHash32(seed, stream, i) >>> 8 >= threshold. Shared by the GPU op
// (threshold, scale), the model (per-module streams) and the CPU reference; the GPU never uploads a mask.

const P2 = 2246822519, P3 = 3266489917, P4 = 668265263, P5 = 374761393;

const rotl = (v: number, r: number) => ((v << r) | (v >>> (32 - r))) >>> 0;
const word = (h: number, w: number) => Math.imul(rotl((h + Math.imul(w, P3)) >>> 0, 17), P4) >>> 0;

/** xxHash32 (seed 0) of the three little-endian u32 words a, b, c. */
export function hash3(a: number, b: number, c: number): number {
  let h = word(word(word(P5 + 12, a >>> 0), b >>> 0), c >>> 0);
  h = Math.imul(h ^ (h >>> 15), P2) >>> 0;
  h = Math.imul(h ^ (h >>> 13), P3) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** 24-bit threshold: an element is dropped with probability threshold / 2^24 ≈ p. */
export function dropoutThreshold(p: number): number {
  if (!(p >= 0 && p < 1)) throw new Error(`dropout probability must be in [0, 1), got ${p}`);
  return Math.round(p * 2 ** 24);
}

/** 1 / (1 − p) rounded to f32, as the kernel multiplies by it. */
export function dropoutScale(p: number): number {
  return Math.fround(1 / (1 - p));
}

/** FNV-1a of a module name: the per-module stream of its dropout masks (q, k, v draw different masks). */
export function dropoutStream(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export function dropoutKeep(seed: number, stream: number, i: number, threshold: number): boolean {
  return hash3(seed, stream, i) >>> 8 >= threshold;
}
