// Reference log-softmax gather and masked cross-entropy (f64 accumulation). logits [T,V] row-major.

export interface LsgCpu {
  /** log p(target) per row; 0 on ignored rows (target < 0 or == ignoreIndex) */
  logp: Float32Array;
  /** logsumexp per row */
  lse: Float32Array;
  /** first index of the row maximum */
  argmax: Int32Array;
}

function kept(t: number, v: number, ignoreIndex: number): boolean {
  return t !== ignoreIndex && t >= 0 && t < v;
}

export function logSoftmaxGatherCpu(logits: Float32Array, targets: Int32Array, t: number, v: number, ignoreIndex = -100): LsgCpu {
  const logp = new Float32Array(t), lse = new Float32Array(t), argmax = new Int32Array(t);
  for (let r = 0; r < t; r++) {
    let m = -Infinity, am = 0;
    for (let c = 0; c < v; c++) if (logits[r * v + c] > m) { m = logits[r * v + c]; am = c; }
    let s = 0;
    for (let c = 0; c < v; c++) s += Math.exp(logits[r * v + c] - m);
    const l = m + Math.log(s);
    lse[r] = l;
    argmax[r] = am;
    logp[r] = kept(targets[r], v, ignoreIndex) ? logits[r * v + targets[r]] - l : 0;
  }
  return { logp, lse, argmax };
}

/** dlogits = dlogp[t]·(onehot − softmax) */
export function logSoftmaxGatherBackwardCpu(logits: Float32Array, targets: Int32Array, dlogp: Float32Array, t: number, v: number): Float32Array {
  const { lse } = logSoftmaxGatherCpu(logits, targets, t, v);
  const d = new Float32Array(t * v);
  for (let r = 0; r < t; r++) {
    if (dlogp[r] === 0) continue;
    for (let c = 0; c < v; c++) d[r * v + c] = dlogp[r] * ((c === targets[r] ? 1 : 0) - Math.exp(logits[r * v + c] - lse[r]));
  }
  return d;
}

/** Mean of −log p over kept rows; dlogits = (softmax − onehot)/numKept on kept rows, 0 elsewhere. */
export function crossEntropyMaskedCpu(logits: Float32Array, targets: Int32Array, t: number, v: number, ignoreIndex = -100) {
  const { logp, argmax } = logSoftmaxGatherCpu(logits, targets, t, v, ignoreIndex);
  let n = 0, sum = 0, correct = 0;
  for (let r = 0; r < t; r++) {
    if (!kept(targets[r], v, ignoreIndex)) continue;
    n++;
    sum -= logp[r];
    if (argmax[r] === targets[r]) correct++;
  }
  const loss = n ? sum / n : 0;
  const dlogp = new Float32Array(t);
  for (let r = 0; r < t; r++) dlogp[r] = kept(targets[r], v, ignoreIndex) ? -1 / n : 0;
  const dlogits = logSoftmaxGatherBackwardCpu(logits, targets, dlogp, t, v);
  return { loss, numKept: n, numCorrect: correct, logp, argmax, dlogits };
}
