// The CPU sampler (reference of shaders/sample.wgsl, and the fallback for what the GPU kernel
// does not take): logits/temperature → top-k → top-p → one draw from a given uniform
// (transformers' warper order). Tokens more than e^30 times less likely than the best are dropped
// first (their total mass is below 1e-8 even over a 150k vocabulary). Nothing sorts the whole
// vocabulary: plain temperature draws in index order, top-k keeps its k best with a small heap,
// and only the survivors are sorted (top-p needs them in probability order).

export interface SampleParams { temperature?: number; topK?: number; topP?: number }

/** First index of the maximum (torch.argmax). */
export function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

/** A token id from one row of logits and a uniform u in [0, 1) (temperature > 0). */
export function sampleTokenU(logits: ArrayLike<number>, o: SampleParams, u: number): number {
  const T = o.temperature ?? 0;
  const n = logits.length, topP = o.topP ?? 1;
  let mx = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i] > mx) mx = logits[i];
  const floor = mx - 30 * T;
  const k = o.topK && o.topK > 0 ? o.topK : 0;
  if (!k && topP >= 1) {
    let total = 0;
    for (let i = 0; i < n; i++) if (logits[i] >= floor) total += Math.exp((logits[i] - mx) / T);
    let r = u * total, last = 0;
    for (let i = 0; i < n; i++) {
      if (logits[i] < floor) continue;
      last = i;
      r -= Math.exp((logits[i] - mx) / T);
      if (r < 0) return i;
    }
    return last;
  }
  const cand = k ? topKIndices(logits, k, floor) : Array.from({ length: n }, (_, i) => i).filter((i) => logits[i] >= floor);
  cand.sort((a, b) => logits[b] - logits[a] || a - b);
  const p = cand.map((i) => Math.exp((logits[i] - mx) / T));
  let total = p.reduce((a, b) => a + b, 0);
  let keep = p.length;
  if (topP < 1) {
    // keep token j while the mass before it is below topP (at least one token)
    let before = 0;
    for (let j = 0; j < p.length; j++) {
      if (j > 0 && before / total >= topP) {
        keep = j;
        break;
      }
      before += p[j];
    }
    total = p.slice(0, keep).reduce((a, b) => a + b, 0);
  }
  let r = u * total;
  for (let j = 0; j < keep; j++) {
    r -= p[j];
    if (r < 0) return cand[j];
  }
  return cand[keep - 1];
}

/** log_softmax(logits / temperature)[id] over the whole row (f64). */
export function logprobAt(logits: ArrayLike<number>, id: number, temperature: number): number {
  let mx = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > mx) mx = logits[i];
  let s = 0;
  for (let i = 0; i < logits.length; i++) s += Math.exp((logits[i] - mx) / temperature);
  return (logits[id] - mx) / temperature - Math.log(s);
}

/** Indices of the k largest logits at or above `floor` (ties: lower index first), unordered. */
function topKIndices(logits: ArrayLike<number>, k: number, floor: number): number[] {
  // min-heap on (logit, −index): the root is the weakest kept token
  const heap: number[] = [];
  const weaker = (a: number, b: number) => logits[a] < logits[b] || (logits[a] === logits[b] && a > b);
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < heap.length && weaker(heap[l], heap[m])) m = l;
      if (r < heap.length && weaker(heap[r], heap[m])) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m], heap[i]];
      i = m;
    }
  };
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] < floor) continue;
    if (heap.length < k) {
      heap.push(i);
      for (let c = heap.length - 1; c > 0; ) {
        const p = (c - 1) >> 1;
        if (!weaker(heap[c], heap[p])) break;
        [heap[c], heap[p]] = [heap[p], heap[c]];
        c = p;
      }
    } else if (weaker(heap[0], i)) {
      heap[0] = i;
      down(0);
    }
  }
  return heap;
}
