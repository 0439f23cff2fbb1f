// Golden handlers for the data pipeline (shared/golden/README.md §6–§8): smart_resize, patchify,
// vision_window_index, rope_index. Integer outputs are checked exactly, patchify floats with TOL.patchify.
import { check, checkExact, TOL, type CaseHandler, type Check, type GoldenCase } from './golden.ts';
import { normalizeImage, patchify, smartResize } from '../data/image.ts';
import { getWindowIndex } from '../data/windowIndex.ts';
import { getRopeIndex } from '../data/ropeIndex.ts';

const triple = (c: GoldenCase, key: string): [number, number, number] => {
  const v = c.meta[key]?.split(',').map(Number);
  if (!v || v.length !== 3 || v.some((x) => !Number.isFinite(x))) throw new Error(`${c.file}: metadata "${key}" is not three numbers`);
  return [v[0], v[1], v[2]];
};

export const dataCases: Record<string, CaseHandler> = {
  async smart_resize(c) {
    const hw = c.i32('input.hw'), factor = c.i32('input.factor');
    const minP = c.i32('input.min_pixels'), maxP = c.i32('input.max_pixels');
    const got = new Int32Array(hw.length);
    for (let k = 0; k < factor.length; k++) {
      const [h, w] = smartResize(hw[2 * k], hw[2 * k + 1], factor[k], minP[k], maxP[k]);
      got[2 * k] = h;
      got[2 * k + 1] = w;
    }
    return [checkExact('expect.hw', got, c.i32('expect.hw'))];
  },

  async patchify(c) {
    const [H, W, C] = c.shape('input.image');
    if (C !== 3) throw new Error(`${c.file}: input.image must be [H, W, 3], got [${H}, ${W}, ${C}]`);
    const cfg = {
      patchSize: c.num('patch_size'), mergeSize: c.num('merge_size'), temporalPatchSize: c.num('temporal_patch_size'),
      rescaleFactor: c.num('rescale_factor'), imageMean: triple(c, 'image_mean'), imageStd: triple(c, 'image_std'),
    };
    const normalized = normalizeImage(c.f32('input.image'), cfg);
    const { pixelValues, imageGridThw } = patchify(normalized, H, W, cfg);
    return [
      check('expect.normalized', normalized, c.f32('expect.normalized'), TOL.patchify),
      check('expect.pixel_values', pixelValues, c.f32('expect.pixel_values'), TOL.patchify),
      checkExact('expect.image_grid_thw', imageGridThw, c.i32('expect.image_grid_thw')),
    ];
  },

  async vision_window_index(c) {
    const r = getWindowIndex(c.i32('input.image_grid_thw'), {
      windowSize: c.num('window_size'), spatialMergeSize: c.num('spatial_merge_size'), patchSize: c.num('patch_size'),
    });
    const checks: Check[] = [
      checkExact('expect.window_index', r.windowIndex, c.i32('expect.window_index')),
      checkExact('expect.cu_window_seqlens', r.cuWindowSeqlens, c.i32('expect.cu_window_seqlens')),
      checkExact('expect.cu_seqlens', r.cuSeqlens, c.i32('expect.cu_seqlens')),
      checkExact('expect.window_token_counts', r.windowTokenCounts, c.i32('expect.window_token_counts')),
      checkExact('expect.patch_pos', r.patchPos, c.i32('expect.patch_pos')),
    ];
    if (c.meta.num_windows_including_empty !== undefined) {
      checks.push(checkExact('meta.num_windows_including_empty', [r.windowTokenCounts.length], [c.num('num_windows_including_empty')]));
    }
    if (c.meta.num_nonempty_windows !== undefined) {
      checks.push(checkExact('meta.num_nonempty_windows', [r.windowTokenCounts.filter((n) => n > 0).length], [c.num('num_nonempty_windows')]));
    }
    return checks;
  },

  async rope_index(c) {
    const [B] = c.shape('input.input_ids');
    const r = getRopeIndex({
      inputIds: c.i32('input.input_ids'),
      batchSize: B,
      attentionMask: c.has('input.attention_mask') ? c.i32('input.attention_mask') : undefined,
      imageGridThw: c.has('input.image_grid_thw') ? c.i32('input.image_grid_thw') : undefined,
    }, {
      imageTokenId: c.num('image_token_id'),
      visionStartTokenId: c.num('vision_start_token_id'),
      spatialMergeSize: c.num('spatial_merge_size'),
      videoTokenId: c.meta.video_token_id !== undefined ? c.num('video_token_id') : undefined,
    });
    return [
      checkExact('expect.position_ids', r.positionIds, c.i32('expect.position_ids')),
      checkExact('expect.rope_deltas', r.ropeDeltas, c.i32('expect.rope_deltas')),
    ];
  },
};
