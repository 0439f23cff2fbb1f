// TensorBoard's scalar smoothing: an exponential moving average debiased like Adam's moments, so
// the first points are not pulled toward 0. weight 0 = raw values, → 1 = very smooth.
// Non-finite values (NaN, ±Inf) pass through as they are and do not disturb the average.
export function debiasedEma(values: ArrayLike<number | null>, weight: number): (number | null)[] {
  const w = Math.min(Math.max(weight, 0), 0.999);
  const out: (number | null)[] = new Array(values.length);
  let last = 0;
  let n = 0;
  // TensorBoard keeps a constant series exact (no float noise from the EMA).
  let constant = true;
  let first: number | undefined;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || !Number.isFinite(v)) continue;
    if (first === undefined) first = v;
    else if (v !== first) constant = false;
  }
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || !Number.isFinite(v)) {
      out[i] = v;
      continue;
    }
    if (constant) {
      out[i] = v;
      continue;
    }
    last = last * w + (1 - w) * v;
    n++;
    out[i] = w === 0 ? v : last / (1 - Math.pow(w, n));
  }
  return out;
}
