// Reference attention (f64 accumulation): causal GQA with a query offset (KV-cache decoding) and
// varlen attention over cu_seqlens segments. Layouts as on the GPU: q [Lq,Hq,D], k/v [Lk,Hkv,D];
// query head h reads kv head floor(h / (Hq/Hkv)).

export interface AttnShape {
  lq: number;
  lk: number;
  hq: number;
  hkv: number;
  d: number;
  scale: number;
}

/** Key range [start, end) visible to query row i. */
export type KeyRange = (i: number) => [number, number];

export function causalRange(lq: number, lk: number, qOffset = lk - lq): KeyRange {
  return (i) => [0, Math.min(lk, i + qOffset + 1)];
}

/** Segment [cu[s], cu[s+1]) holding row i (empty when i is outside every segment); causal cuts at i. */
export function varlenRange(cu: ArrayLike<number>, causal = false): KeyRange {
  return (i) => {
    for (let s = 0; s + 1 < cu.length; s++) if (cu[s] <= i && i < cu[s + 1]) return [cu[s], causal ? i + 1 : cu[s + 1]];
    return [0, 0];
  };
}

function scores(q: Float32Array, k: Float32Array, s: AttnShape, i: number, h: number, j0: number, j1: number): Float64Array {
  const { hq, hkv, d, scale } = s;
  const g = Math.floor(h / (hq / hkv));
  const out = new Float64Array(Math.max(0, j1 - j0));
  for (let j = j0; j < j1; j++) {
    let acc = 0;
    for (let c = 0; c < d; c++) acc += q[(i * hq + h) * d + c] * k[(j * hkv + g) * d + c];
    out[j - j0] = scale * acc;
  }
  return out;
}

/** Forward: out [Lq,Hq,D] and the per-(row, head) logsumexp [Lq,Hq] of the scaled scores. */
export function attentionCpu(q: Float32Array, k: Float32Array, v: Float32Array, s: AttnShape, range: KeyRange): { out: Float32Array; lse: Float32Array } {
  const { lq, hq, hkv, d } = s;
  const out = new Float32Array(lq * hq * d);
  const lse = new Float32Array(lq * hq);
  for (let i = 0; i < lq; i++) {
    const [j0, j1] = range(i);
    for (let h = 0; h < hq; h++) {
      if (j1 <= j0) continue;
      const g = Math.floor(h / (hq / hkv));
      const sc = scores(q, k, s, i, h, j0, j1);
      const m = Math.max(...sc);
      let l = 0;
      for (const x of sc) l += Math.exp(x - m);
      lse[i * hq + h] = m + Math.log(l);
      for (let c = 0; c < d; c++) {
        let acc = 0;
        for (let j = j0; j < j1; j++) acc += Math.exp(sc[j - j0] - m) * v[(j * hkv + g) * d + c];
        out[(i * hq + h) * d + c] = acc / l;
      }
    }
  }
  return { out, lse };
}

/** Backward of sum(out * dy): dq [Lq,Hq,D], dk/dv [Lk,Hkv,D] (summed over the query heads of a group). */
export function attentionBackwardCpu(
  q: Float32Array, k: Float32Array, v: Float32Array, dy: Float32Array, s: AttnShape, range: KeyRange,
): { dq: Float32Array; dk: Float32Array; dv: Float32Array } {
  const { lq, lk, hq, hkv, d, scale } = s;
  const dq = new Float64Array(lq * hq * d), dk = new Float64Array(lk * hkv * d), dv = new Float64Array(lk * hkv * d);
  for (let i = 0; i < lq; i++) {
    const [j0, j1] = range(i);
    if (j1 <= j0) continue;
    for (let h = 0; h < hq; h++) {
      const g = Math.floor(h / (hq / hkv));
      const qo = (i * hq + h) * d;
      const sc = scores(q, k, s, i, h, j0, j1);
      const m = Math.max(...sc);
      let l = 0;
      for (const x of sc) l += Math.exp(x - m);
      const p = sc.map((x) => Math.exp(x - m) / l);
      // dP_j = dy·v_j ; dS_j = P_j (dP_j − Σ_j' P_j' dP_j')
      const dp = new Float64Array(p.length);
      let delta = 0;
      for (let j = j0; j < j1; j++) {
        let acc = 0;
        for (let c = 0; c < d; c++) acc += dy[qo + c] * v[(j * hkv + g) * d + c];
        dp[j - j0] = acc;
        delta += p[j - j0] * acc;
      }
      for (let j = j0; j < j1; j++) {
        const pj = p[j - j0], ds = pj * (dp[j - j0] - delta) * scale;
        const ko = (j * hkv + g) * d;
        for (let c = 0; c < d; c++) {
          dq[qo + c] += ds * k[ko + c];
          dk[ko + c] += ds * q[qo + c];
          dv[ko + c] += pj * dy[qo + c];
        }
      }
    }
  }
  return { dq: Float32Array.from(dq), dk: Float32Array.from(dk), dv: Float32Array.from(dv) };
}
