// Embedding reference: out[t] = E[ids[t]]; backward dE[ids[t]] += dy[t] (ids outside [0, V) give 0 / no grad).

export function embeddingCpu(ids: ArrayLike<number>, table: ArrayLike<number>, vocab: number): Float32Array {
  const hidden = table.length / vocab;
  const out = new Float32Array(ids.length * hidden);
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t];
    if (id < 0 || id >= vocab) continue;
    for (let h = 0; h < hidden; h++) out[t * hidden + h] = table[id * hidden + h];
  }
  return out;
}

export function embeddingBackwardCpu(ids: ArrayLike<number>, dy: ArrayLike<number>, vocab: number): Float32Array {
  const hidden = dy.length / ids.length;
  const acc = new Float64Array(vocab * hidden);
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t];
    if (id < 0 || id >= vocab) continue;
    for (let h = 0; h < hidden; h++) acc[id * hidden + h] += dy[t * hidden + h];
  }
  return Float32Array.from(acc);
}
