// Vision-tower bookkeeping that depends only on the image grids (transformers'
// Qwen2_5_VisionTransformerPretrainedModel.rot_pos_emb / get_window_index / cu_seqlens).
// Patches arrive in patchified order: per image, per frame, 2×2 merge groups row-major, the 4 patches
// of a group row-major. Window attention runs on merged tokens grouped into ws×ws windows
// (ws = window_size / merge / patch = 4 merged tokens for Qwen2.5-VL).

export interface WindowOptions { windowSize: number; spatialMergeSize: number; patchSize: number }

export interface WindowIndex {
  /** [M]: merged-token indices in window order (hidden states are gathered by this, 4 rows at a time). */
  windowIndex: Int32Array;
  /** [0, …]: running patch counts at window ends, consecutive duplicates (empty windows) removed. */
  cuWindowSeqlens: Int32Array;
  /** [frames + 1]: running patch counts per frame, for the full-attention blocks. */
  cuSeqlens: Int32Array;
  /** Merged tokens in every window, empty windows included, in window order. */
  windowTokenCounts: Int32Array;
  /** [N, 2]: (row, col) of every patch in patchified order, per frame (the 2-D rotary positions). */
  patchPos: Int32Array;
  numPatches: number;
  numMergedTokens: number;
}

/** Rows of a grid list given as [[t, h, w], …] or flat [t0, h0, w0, t1, …]. */
export function gridRows(grid: ArrayLike<number> | readonly (readonly number[])[]): [number, number, number][] {
  const flat: number[] = Array.isArray(grid) && Array.isArray(grid[0]) ? (grid as number[][]).flat() : Array.from(grid as ArrayLike<number>);
  if (flat.length % 3) throw new Error(`image_grid_thw: expected rows of 3 (t, h, w), got ${flat.length} values`);
  const rows: [number, number, number][] = [];
  for (let i = 0; i < flat.length; i += 3) rows.push([flat[i], flat[i + 1], flat[i + 2]]);
  return rows;
}

/** Window order, cu_seqlens and rotary positions for a list of image grids (t, gh, gw in patches). */
export function getWindowIndex(imageGridThw: ArrayLike<number> | readonly (readonly number[])[], opts: WindowOptions): WindowIndex {
  const m = opts.spatialMergeSize;
  const ws = Math.floor(opts.windowSize / m / opts.patchSize);
  if (!(ws >= 1)) throw new Error(`window index: window_size ${opts.windowSize} is smaller than spatial_merge_size·patch_size = ${m * opts.patchSize}`);
  const grids = gridRows(imageGridThw);
  let numPatches = 0, frames = 0;
  for (const [t, h, w] of grids) {
    if (!(t >= 1 && h >= 1 && w >= 1) || h % m || w % m) throw new Error(`window index: grid (${t}, ${h}, ${w}) must be positive with h, w multiples of spatial_merge_size ${m}`);
    numPatches += t * h * w;
    frames += t;
  }
  const unit = m * m;
  const M = numPatches / unit;
  const windowIndex = new Int32Array(M);
  const counts: number[] = [];
  const cuWindow: number[] = [0];
  const cuSeqlens = new Int32Array(frames + 1);
  const patchPos = new Int32Array(numPatches * 2);
  let wi = 0, offset = 0, frame = 0, p = 0;
  for (const [t, h, w] of grids) {
    const lh = h / m, lw = w / m;
    // Padding is ws − (l mod ws): a full extra row/column of empty windows when l is a multiple of ws
    // (transformers pads that way; the empty windows only repeat a cu_window_seqlens entry).
    const nwh = (lh + ws - (lh % ws)) / ws, nww = (lw + ws - (lw % ws)) / ws;
    for (let ti = 0; ti < t; ti++) {
      for (let a = 0; a < nwh; a++) for (let b = 0; b < nww; b++) {
        let n = 0;
        for (let r = a * ws; r < Math.min((a + 1) * ws, lh); r++) for (let c = b * ws; c < Math.min((b + 1) * ws, lw); c++, n++) {
          windowIndex[wi++] = offset + (ti * lh + r) * lw + c;
        }
        counts.push(n);
        const cu = cuWindow[cuWindow.length - 1] + n * unit;
        if (cu !== cuWindow[cuWindow.length - 1]) cuWindow.push(cu);
      }
      cuSeqlens[frame + 1] = cuSeqlens[frame] + h * w;
      frame++;
      for (let br = 0; br < lh; br++) for (let bc = 0; bc < lw; bc++) for (let mr = 0; mr < m; mr++) for (let mc = 0; mc < m; mc++) {
        patchPos[p++] = br * m + mr;
        patchPos[p++] = bc * m + mc;
      }
    }
    offset += t * lh * lw;
  }
  return {
    windowIndex, cuWindowSeqlens: Int32Array.from(cuWindow), cuSeqlens, windowTokenCounts: Int32Array.from(counts),
    patchPos, numPatches, numMergedTokens: M,
  };
}

/** argsort of a permutation: `reverse[windowIndex[i]] = i` (un-permutes the merger output). */
export function reverseIndex(index: ArrayLike<number>): Int32Array {
  const rev = new Int32Array(index.length).fill(-1);
  for (let i = 0; i < index.length; i++) {
    const j = index[i];
    if (!(j >= 0 && j < index.length) || rev[j] !== -1) throw new Error(`reverseIndex: not a permutation of 0..${index.length - 1} (entry ${i} = ${j})`);
    rev[j] = i;
  }
  return rev;
}
