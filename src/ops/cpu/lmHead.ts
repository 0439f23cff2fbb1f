// Reference fused lm_head + log-softmax gather (f64 accumulation): logits = scale · x·Wᵀ for
// x [T, H] and W [V, H] row-major, log p(target), logsumexp, first argmax; and the backward
// dx = scale · dlogp · (onehot − softmax) · W.

export interface LmHeadCpu {
  logp: Float32Array;
  lse: Float32Array;
  argmax: Int32Array;
}

function kept(t: number, ignoreIndex: number): boolean {
  return t >= 0 && t !== ignoreIndex;
}

function logitsRow(x: Float32Array, w: Float32Array, r: number, H: number, V: number, scale: number): Float64Array {
  const out = new Float64Array(V);
  for (let v = 0; v < V; v++) {
    let d = 0;
    for (let h = 0; h < H; h++) d += x[r * H + h] * w[v * H + h];
    out[v] = scale * d;
  }
  return out;
}

export function lmHeadCpu(x: Float32Array, w: Float32Array, targets: Int32Array, T: number, H: number, V: number, scale = 1, ignoreIndex = -100): LmHeadCpu {
  const logp = new Float32Array(T), lse = new Float32Array(T), argmax = new Int32Array(T);
  for (let r = 0; r < T; r++) {
    const l = logitsRow(x, w, r, H, V, scale);
    let m = -Infinity, am = 0;
    for (let v = 0; v < V; v++) if (l[v] > m) { m = l[v]; am = v; }
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(l[v] - m);
    const z = m + Math.log(s);
    lse[r] = z;
    argmax[r] = am;
    logp[r] = kept(targets[r], ignoreIndex) ? l[targets[r]] - z : 0;
  }
  return { logp, lse, argmax };
}

export function lmHeadBackwardCpu(x: Float32Array, w: Float32Array, targets: Int32Array, dlogp: Float32Array, T: number, H: number, V: number, scale = 1, ignoreIndex = -100): Float32Array {
  const dx = new Float32Array(T * H);
  for (let r = 0; r < T; r++) {
    if (!kept(targets[r], ignoreIndex) || dlogp[r] === 0) continue;
    const l = logitsRow(x, w, r, H, V, scale);
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, l[v]);
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(l[v] - m);
    const acc = new Float64Array(H);
    for (let v = 0; v < V; v++) {
      const g = scale * dlogp[r] * ((v === targets[r] ? 1 : 0) - Math.exp(l[v] - m) / s);
      for (let h = 0; h < H; h++) acc[h] += g * w[v * H + h];
    }
    for (let h = 0; h < H; h++) dx[r * H + h] = acc[h];
  }
  return dx;
}
