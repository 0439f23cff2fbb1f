import { describe, expect, it } from 'vitest';
import { getWindowIndex, gridRows, reverseIndex } from './windowIndex.ts';

const QWEN = { windowSize: 112, spatialMergeSize: 2, patchSize: 14 };

describe('getWindowIndex', () => {
  it('splits the 1092x1568 image (grid 1x58x84) as the README says', () => {
    const r = getWindowIndex([1, 58, 84], QWEN);
    expect(r.numPatches).toBe(4872);
    expect(r.numMergedTokens).toBe(1218);
    const counts = [...r.windowTokenCounts];
    expect(counts.length).toBe(88);
    const hist = (n: number) => counts.filter((c) => c === n).length;
    expect([hist(16), hist(8), hist(4), hist(2), hist(0)]).toEqual([70, 7, 10, 1, 0]);
    expect(r.cuWindowSeqlens.length).toBe(89);
    expect(r.cuWindowSeqlens[88]).toBe(4872);
    expect([...r.cuSeqlens]).toEqual([0, 4872]);
    expect(new Set(r.windowIndex).size).toBe(1218);
  });
  it('orders windows row-major and tokens row-major inside a window', () => {
    // merged grid 2x6 → windows of 4x4: [0..3] and [4..5] per row; lh = 2 < 4, lw = 6
    const r = getWindowIndex([[1, 4, 12]], QWEN);
    expect([...r.windowIndex]).toEqual([0, 1, 2, 3, 6, 7, 8, 9, 4, 5, 10, 11]);
    expect([...r.windowTokenCounts]).toEqual([8, 4]);
    expect([...r.cuWindowSeqlens]).toEqual([0, 32, 48]);
  });
  it('adds a row of empty windows when the merged side is a multiple of the window', () => {
    // merged 4x4: padded to 8x8 → 4 windows, 3 empty; empty windows vanish from cu_window_seqlens
    const r = getWindowIndex(Int32Array.of(1, 8, 8), QWEN);
    expect([...r.windowTokenCounts]).toEqual([16, 0, 0, 0]);
    expect([...r.cuWindowSeqlens]).toEqual([0, 64]);
    expect([...r.windowIndex]).toEqual([...Array(16).keys()]);
  });
  it('handles several images and frames, offsetting merged indices', () => {
    const r = getWindowIndex([[1, 2, 2], [2, 2, 4]], QWEN);
    expect(r.numPatches).toBe(4 + 16);
    expect([...r.cuSeqlens]).toEqual([0, 4, 12, 20]);
    expect([...r.windowIndex]).toEqual([0, 1, 2, 3, 4]);
    expect([...r.cuWindowSeqlens]).toEqual([0, 4, 12, 20]);
    // patch positions: 2x2 groups row-major, repeated per frame
    expect([...r.patchPos.subarray(0, 8)]).toEqual([0, 0, 0, 1, 1, 0, 1, 1]);
    expect([...r.patchPos.subarray(8, 24)]).toEqual([0, 0, 0, 1, 1, 0, 1, 1, 0, 2, 0, 3, 1, 2, 1, 3]);
    expect([...r.patchPos.subarray(24, 40)]).toEqual([...r.patchPos.subarray(8, 24)]);
  });
  it('refuses bad grids', () => {
    expect(() => getWindowIndex([1, 3, 4], QWEN)).toThrow(/\(1, 3, 4\).*merge/);
    expect(() => getWindowIndex([1, 4], QWEN)).toThrow(/rows of 3/);
    expect(() => getWindowIndex([1, 4, 4], { ...QWEN, windowSize: 20 })).toThrow(/window_size 20/);
  });
});

describe('reverseIndex', () => {
  it('inverts a permutation and refuses anything else', () => {
    const w = getWindowIndex([1, 58, 84], QWEN).windowIndex;
    const rev = reverseIndex(w);
    for (let i = 0; i < w.length; i++) expect(rev[w[i]]).toBe(i);
    expect(() => reverseIndex([0, 0])).toThrow(/not a permutation/);
    expect(gridRows([[1, 2, 3]])).toEqual([[1, 2, 3]]);
  });
});
