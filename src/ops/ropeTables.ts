// Rotary tables (pure TypeScript, shared by the GPU op, the model and the CPU reference), transformers
// conventions: out = x·cos + rotate_half(x)·sin with
// rotate_half(v) = concat(−v[D/2:], v[:D/2]) and emb = concat(freqs, freqs). Since both halves of
// cos/sin are equal, tables here are "half tables" [rows, D/2]; expandHalf gives HF's [rows, D].
// Angles are computed in f64 (positions reach thousands; f32 angles would lose ~1e-4).

export interface CosSin { cos: Float32Array; sin: Float32Array }

/**
 * 3-D M-RoPE tables. `positionIds` is [3, L] (temporal, height, width rows); frequency j of the
 * D/2 uses position stream 0 for j < s0, 1 for j < s0+s1, else 2 (= HF's split of
 * concat(freqs, freqs) into [s0,s1,s2,s0,s1,s2] chunks taking chunk i from stream i mod 3).
 */
export function mropeCosSin(positionIds: ArrayLike<number>, seqLen: number, mropeSection: readonly number[], theta: number, headDim: number): CosSin {
  const half = headDim / 2;
  const [s0, s1, s2] = mropeSection;
  if (mropeSection.length !== 3 || s0 + s1 + s2 !== half) throw new Error(`mrope_section [${mropeSection}] must have 3 parts summing to head_dim/2 = ${half}`);
  if (positionIds.length !== 3 * seqLen) throw new Error(`position_ids has ${positionIds.length} values, expected [3, ${seqLen}]`);
  const cos = new Float32Array(seqLen * half), sin = new Float32Array(seqLen * half);
  for (let j = 0; j < half; j++) {
    const inv = Math.pow(theta, (-2 * j) / headDim);
    const s = j < s0 ? 0 : j < s0 + s1 ? 1 : 2;
    for (let l = 0; l < seqLen; l++) {
      const a = positionIds[s * seqLen + l] * inv;
      cos[l * half + j] = Math.cos(a);
      sin[l * half + j] = Math.sin(a);
    }
  }
  return { cos, sin };
}

/**
 * (row, col) of every vision patch in patchified order (per image: t, h/merge, w/merge, merge_h,
 * merge_w), repeated per temporal frame; as HF's rot_pos_emb. `imageGridThw` is [n, 3] flat.
 */
export function visionPatchPos(imageGridThw: ArrayLike<number>, mergeSize: number): Int32Array {
  const out: number[] = [];
  for (let k = 0; k < imageGridThw.length; k += 3) {
    const [t, h, w] = [imageGridThw[k], imageGridThw[k + 1], imageGridThw[k + 2]];
    if (h % mergeSize || w % mergeSize) throw new Error(`image_grid_thw row ${k / 3} (${t}, ${h}, ${w}) is not a multiple of merge size ${mergeSize}`);
    for (let ti = 0; ti < t; ti++)
      for (let bh = 0; bh < h / mergeSize; bh++)
        for (let bw = 0; bw < w / mergeSize; bw++)
          for (let mh = 0; mh < mergeSize; mh++)
            for (let mw = 0; mw < mergeSize; mw++) out.push(bh * mergeSize + mh, bw * mergeSize + mw);
  }
  return Int32Array.from(out);
}

/** f64 angles of the vision rotary [N, hd/2]: row·inv[k] for k < hd/4, col·inv[k] after; inv[k] = θ^(−2k/(hd/2)). */
function visionAngles(patchPos: ArrayLike<number>, headDim: number, theta: number): Float64Array {
  const n = patchPos.length / 2, half = headDim / 2, q = half / 2;
  if (headDim % 4) throw new Error(`vision head_dim ${headDim} must be a multiple of 4`);
  const a = new Float64Array(n * half);
  for (let k = 0; k < q; k++) {
    const inv = Math.pow(theta, (-2 * k) / half);
    for (let i = 0; i < n; i++) {
      a[i * half + k] = patchPos[2 * i] * inv;
      a[i * half + q + k] = patchPos[2 * i + 1] * inv;
    }
  }
  return a;
}

/** HF's rotary_pos_emb ("freqs") [N, hd/2] for patch positions [N, 2]. */
export function visionRopeFreqs(patchPos: ArrayLike<number>, headDim: number, theta = 10000): Float32Array {
  return Float32Array.from(visionAngles(patchPos, headDim, theta));
}

export function visionCosSin(patchPos: ArrayLike<number>, headDim: number, theta = 10000): CosSin {
  const a = visionAngles(patchPos, headDim, theta);
  return { cos: Float32Array.from(a, Math.cos), sin: Float32Array.from(a, Math.sin) };
}

/** [rows, D/2] -> [rows, D] (concat(t, t) per row), HF's layout of cos/sin. */
export function expandHalf(t: ArrayLike<number>, half: number): Float32Array {
  const rows = t.length / half;
  const out = new Float32Array(rows * half * 2);
  for (let r = 0; r < rows; r++)
    for (let j = 0; j < half; j++) out[r * 2 * half + j] = out[r * 2 * half + half + j] = t[r * half + j];
  return out;
}

/** Patch positions [N, 2] reordered into window order: merged token windowIndex[i] (its `unit` = merge² patch rows) goes i-th. */
export function windowOrderPatchPos(patchPos: ArrayLike<number>, windowIndex: ArrayLike<number>, unit = 4): Int32Array {
  const out = new Int32Array(patchPos.length);
  for (let i = 0; i < windowIndex.length; i++)
    for (let k = 0; k < 2 * unit; k++) out[i * 2 * unit + k] = patchPos[windowIndex[i] * 2 * unit + k];
  return out;
}
