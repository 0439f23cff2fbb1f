import { describe, expect, it } from 'vitest';
import { decodePositionIds, getRopeIndex, ropeTokenIdsFromConfig } from './ropeIndex.ts';

const ids = { imageTokenId: 9, visionStartTokenId: 7, spatialMergeSize: 2, videoTokenId: 10, tokensPerSecond: 2 };
const rows = (p: Int32Array, B: number, L: number, b = 0) => [0, 1, 2].map((s) => [...p.subarray((s * B + b) * L, (s * B + b + 1) * L)]);

describe('getRopeIndex', () => {
  it('gives text (p,p,p) and image (s, s+r, s+c) positions', () => {
    // text, vision_start, 2x3 merged image (grid 1x4x6), vision_end, text
    const input = [1, 2, 7, 9, 9, 9, 9, 9, 9, 8, 3];
    const r = getRopeIndex({ inputIds: input, imageGridThw: [[1, 4, 6]] }, ids);
    expect(rows(r.positionIds, 1, 11)).toEqual([
      [0, 1, 2, 3, 3, 3, 3, 3, 3, 6, 7],
      [0, 1, 2, 3, 3, 3, 4, 4, 4, 6, 7],
      [0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7],
    ]);
    expect([...r.ropeDeltas]).toEqual([8 - 11]);
  });
  it('matches transformers on text only, with and without padding', () => {
    const r = getRopeIndex({ inputIds: [5, 6, 7, 0, 0, 1, 2, 3, 4, 5], batchSize: 2, attentionMask: [1, 1, 1, 0, 0, 1, 1, 1, 1, 1] }, ids);
    expect(rows(r.positionIds, 2, 5, 0)[0]).toEqual([0, 1, 2, 1, 1]);
    expect(rows(r.positionIds, 2, 5, 1)[2]).toEqual([0, 1, 2, 3, 4]);
    expect([...r.ropeDeltas]).toEqual([-2, 0]);
    expect([...getRopeIndex({ inputIds: [1, 2, 3] }, ids).ropeDeltas]).toEqual([0]);
  });
  it('consumes the grids in order across a left-padded batch', () => {
    const a = [0, 0, 7, 9, 8, 1];           // one 1x1 merged image (grid 1x2x2)
    const b = [7, 9, 9, 9, 9, 8];           // one 2x2 merged image (grid 1x4x4)
    const r = getRopeIndex({ inputIds: [...a, ...b], batchSize: 2, attentionMask: [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], imageGridThw: [1, 2, 2, 1, 4, 4] }, ids);
    expect(rows(r.positionIds, 2, 6, 0)).toEqual([[1, 1, 0, 1, 2, 3], [1, 1, 0, 1, 2, 3], [1, 1, 0, 1, 2, 3]]);
    expect(rows(r.positionIds, 2, 6, 1)).toEqual([[0, 1, 1, 1, 1, 3], [0, 1, 1, 2, 2, 3], [0, 1, 2, 1, 2, 3]]);
    expect([...r.ropeDeltas]).toEqual([4 - 6, 4 - 6]);
  });
  it('spaces video frames by seconds_per_grid · tokens_per_second', () => {
    const r = getRopeIndex({ inputIds: [7, 10, 10, 8], videoGridThw: [2, 2, 2], secondPerGridTs: [1] }, ids);
    expect(rows(r.positionIds, 1, 4)).toEqual([[0, 1, 3, 4], [0, 1, 1, 4], [0, 1, 1, 4]]);
  });
  it('fails clearly when tokens and grids disagree', () => {
    expect(() => getRopeIndex({ inputIds: [7, 9, 9, 8], imageGridThw: [1, 4, 4] }, ids)).toThrow(/needs 4 consecutive image tokens/);
    expect(() => getRopeIndex({ inputIds: [7, 9, 8, 7, 9, 8], imageGridThw: [1, 2, 2] }, ids)).toThrow(/more images than the 1 rows/);
    expect(() => getRopeIndex({ inputIds: [7, 9, 8], imageGridThw: [1, 2, 2, 1, 2, 2] }, ids)).toThrow(/holds 1 images.*2 rows/);
    expect(() => getRopeIndex({ inputIds: [1, 2, 3], batchSize: 2 }, ids)).toThrow(/do not split/);
  });
});

describe('decodePositionIds', () => {
  it('adds the rope delta to the cache position on every stream', () => {
    const d = decodePositionIds(11, [-3, 2], 2);
    expect([...d]).toEqual([8, 9, 13, 14, 8, 9, 13, 14, 8, 9, 13, 14]);
  });
  it('continues the prefill positions', () => {
    const input = [1, 7, 9, 9, 9, 9, 8];
    const r = getRopeIndex({ inputIds: input, imageGridThw: [1, 4, 4] }, ids);
    const last = r.positionIds[input.length - 1];
    expect(decodePositionIds(input.length, r.ropeDeltas)[0]).toBe(last + 1);
  });
});

describe('ropeTokenIdsFromConfig', () => {
  it('reads the ids from a Qwen2.5-VL config.json', () => {
    const cfg = {
      image_token_id: 151655, video_token_id: 151656, vision_start_token_id: 151652, vision_end_token_id: 151653,
      vision_config: { spatial_merge_size: 2, tokens_per_second: 2 },
    };
    expect(ropeTokenIdsFromConfig(cfg)).toEqual({ imageTokenId: 151655, visionStartTokenId: 151652, spatialMergeSize: 2, videoTokenId: 151656, tokensPerSecond: 2 });
    expect(() => ropeTokenIdsFromConfig({})).toThrow(/image_token_id/);
  });
});
