// 3-D M-RoPE position ids for Qwen2.5-VL (transformers' Qwen2_5_VLModel.get_rope_index) and the
// positions used while decoding with a KV cache.
// Text tokens get (p, p, p), p counting up; the merged tokens of an image at merged (r, c) get
// (s, s + r, s + c) with s the next free position, and text after the image resumes at 1 + the
// largest position used. The rope delta (largest position + 1 − L) turns a cache position into the
// next token's position: images use fewer positions than tokens.

import { gridRows } from './windowIndex.ts';

export interface RopeTokenIds {
  imageTokenId: number;
  visionStartTokenId: number;
  spatialMergeSize: number;
  videoTokenId?: number;
  /** Temporal positions per second of video (vision_config.tokens_per_second); videos only. */
  tokensPerSecond?: number;
}

/** Special ids and merge size from a Qwen2.5-VL config.json (or a golden case's metadata spelling). */
export function ropeTokenIdsFromConfig(config: Record<string, unknown>): RopeTokenIds {
  const vc = (config.vision_config ?? {}) as Record<string, unknown>;
  const num = (v: unknown, what: string): number => {
    const n = typeof v === 'string' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n)) throw new Error(`rope index: config has no integer "${what}" (got ${JSON.stringify(v)})`);
    return n;
  };
  const opt = (v: unknown) => (v === undefined || v === null ? undefined : Number(v));
  return {
    imageTokenId: num(config.image_token_id, 'image_token_id'),
    visionStartTokenId: num(config.vision_start_token_id, 'vision_start_token_id'),
    spatialMergeSize: num(vc.spatial_merge_size ?? config.spatial_merge_size ?? 2, 'vision_config.spatial_merge_size'),
    videoTokenId: opt(config.video_token_id),
    tokensPerSecond: opt(vc.tokens_per_second ?? config.tokens_per_second),
  };
}

export interface RopeIndexInput {
  /** [B, L] token ids, row-major. */
  inputIds: ArrayLike<number>;
  /** B (default 1); L = inputIds.length / B. */
  batchSize?: number;
  /** [B, L], 1 = real token (default all ones). Masked positions get (1, 1, 1), as transformers does. */
  attentionMask?: ArrayLike<number>;
  /** Grids (t, gh, gw) of every image of the batch, in order of appearance. */
  imageGridThw?: ArrayLike<number> | readonly (readonly number[])[];
  videoGridThw?: ArrayLike<number> | readonly (readonly number[])[];
  /** Seconds per temporal grid step of each video (default 1). */
  secondPerGridTs?: ArrayLike<number>;
}

export interface RopeIndex {
  /** [3, B, L]: temporal, height, width streams. */
  positionIds: Int32Array;
  /** [B]: max position + 1 − L (L counts padding). */
  ropeDeltas: Int32Array;
}

export function getRopeIndex(input: RopeIndexInput, ids: RopeTokenIds): RopeIndex {
  const B = input.batchSize ?? 1;
  const total = input.inputIds.length;
  if (!(B >= 1) || total % B) throw new Error(`rope index: ${total} input ids do not split into ${B} rows`);
  const L = total / B;
  const mask = input.attentionMask;
  if (mask && mask.length !== total) throw new Error(`rope index: attention_mask has ${mask.length} entries, input_ids ${total} ([${B}, ${L}])`);
  const images = input.imageGridThw ? gridRows(input.imageGridThw) : [];
  const videos = input.videoGridThw ? gridRows(input.videoGridThw) : [];
  const positionIds = new Int32Array(3 * total).fill(1);
  const ropeDeltas = new Int32Array(B);
  const m = ids.spatialMergeSize;
  const tps = ids.tokensPerSecond ?? 1;
  const hasVision = images.length > 0 || videos.length > 0;
  let imageIdx = 0, videoIdx = 0;

  for (let b = 0; b < B; b++) {
    const cols: number[] = [];
    for (let j = 0; j < L; j++) if (!mask || mask[b * L + j] === 1) cols.push(j);
    const tok = cols.map((j) => input.inputIds[b * L + j]);
    const put = (k: number, t: number, h: number, w: number) => {
      const j = b * L + cols[k];
      positionIds[j] = t; positionIds[total + j] = h; positionIds[2 * total + j] = w;
    };
    if (!hasVision) {
      // transformers' text-only branch: cumsum(mask) − 1, masked slots 1, delta from the max incl. those 1s.
      tok.forEach((_, k) => put(k, k, k, k));
      ropeDeltas[b] = (tok.length < L ? Math.max(tok.length - 1, 1) : L - 1) + 1 - L;
      continue;
    }
    // A vision item starts right after a vision_start token; its pads are the next run of its id.
    let nImages = 0, nVideos = 0;
    for (let k = 0; k + 1 < tok.length; k++) {
      if (tok[k] !== ids.visionStartTokenId) continue;
      if (tok[k + 1] === ids.imageTokenId) nImages++;
      else if (ids.videoTokenId !== undefined && tok[k + 1] === ids.videoTokenId) nVideos++;
    }
    let st = 0, next = 0, max = -1;
    const text = (end: number) => {
      for (let k = st; k < end; k++, next++) put(k, next, next, next);
      max = Math.max(max, next - 1);
    };
    while (nImages + nVideos > 0) {
      const edImage = nImages > 0 ? tok.indexOf(ids.imageTokenId, st) : -1;
      const edVideo = nVideos > 0 && ids.videoTokenId !== undefined ? tok.indexOf(ids.videoTokenId, st) : -1;
      const isImage = edImage >= 0 && (edVideo < 0 || edImage < edVideo);
      const ed = isImage ? edImage : edVideo;
      if (ed < 0) throw new Error(`rope index: row ${b}: a vision_start is followed by a pad token that cannot be found from index ${cols[st] ?? L}`);
      const grid = isImage ? images[imageIdx] : videos[videoIdx];
      if (!grid) {
        throw new Error(`rope index: row ${b} has more ${isImage ? 'images' : 'videos'} than the ${isImage ? images.length : videos.length} rows of ${isImage ? 'image' : 'video'}_grid_thw`);
      }
      const secPerT = isImage ? 0 : Number(input.secondPerGridTs?.[videoIdx] ?? 1);
      if (isImage) { imageIdx++; nImages--; } else { videoIdx++; nVideos--; }
      const [t, gh, gw] = grid;
      const lh = gh / m, lw = gw / m, n = t * lh * lw;
      const padId = isImage ? ids.imageTokenId : ids.videoTokenId!;
      for (let k = ed; k < ed + n; k++) {
        if (tok[k] !== padId) {
          throw new Error(`rope index: row ${b}: grid (${t}, ${gh}, ${gw}) needs ${n} consecutive ${isImage ? 'image' : 'video'} tokens from index ${cols[ed]}, found ${k >= tok.length ? 'the end of the row' : `token ${tok[k]}`} at ${k - ed}`);
        }
      }
      text(ed);
      const s = next;
      let k = ed;
      for (let ti = 0; ti < t; ti++) {
        const tPos = s + Math.trunc(ti * secPerT * tps);
        for (let r = 0; r < lh; r++) for (let c = 0; c < lw; c++, k++) {
          put(k, tPos, s + r, s + c);
          max = Math.max(max, tPos, s + r, s + c);
        }
      }
      next = max + 1;
      st = ed + n;
    }
    text(tok.length);
    ropeDeltas[b] = max + 1 - L;
  }
  if (hasVision && (imageIdx !== images.length || videoIdx !== videos.length)) {
    throw new Error(`rope index: the batch holds ${imageIdx} images and ${videoIdx} videos but image_grid_thw has ${images.length} rows and video_grid_thw ${videos.length}`);
  }
  return { positionIds, ropeDeltas };
}

/**
 * Positions of `n` new tokens at cache positions start … start+n−1 during decoding:
 * `start + i + ropeDeltas[b]` on all three streams → [3, B, n].
 */
export function decodePositionIds(start: number, ropeDeltas: ArrayLike<number>, n = 1): Int32Array {
  const B = ropeDeltas.length;
  const out = new Int32Array(3 * B * n);
  for (let s = 0; s < 3; s++) for (let b = 0; b < B; b++) for (let i = 0; i < n; i++) out[(s * B + b) * n + i] = start + i + ropeDeltas[b];
  return out;
}
