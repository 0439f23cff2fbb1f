// References for the small generic helpers (row gathers/scatters by index).

export function gatherRowsCpu(src: ArrayLike<number>, width: number, index: ArrayLike<number>): Float32Array {
  const out = new Float32Array(index.length * width);
  for (let i = 0; i < index.length; i++) for (let c = 0; c < width; c++) out[i * width + c] = src[index[i] * width + c];
  return out;
}

/** dst[index[i]] = src[i] (in place on a copy of dst). */
export function scatterRowsCpu(src: ArrayLike<number>, width: number, index: ArrayLike<number>, dst: ArrayLike<number>): Float32Array {
  const out = Float32Array.from(dst);
  for (let i = 0; i < index.length; i++) for (let c = 0; c < width; c++) out[index[i] * width + c] = src[i * width + c];
  return out;
}
