import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, readMany, zeros } from '../gpu/tensor.ts';
import { add, addInPlace, copy, fill, gatherRows, scaleInPlace, scatterRows } from './elementwise.ts';
import { gatherRowsCpu, scatterRowsCpu } from './cpu/elementwise.ts';
import { rand } from './testUtil.ts';

const f = Math.fround;

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

describe('elementwise helpers', () => {
  it('add, addInPlace, scaleInPlace, fill, copy (1000+ elements, exact f32)', async () => {
    const n = 1037, a = rand(n, 1), b = rand(n, 2);
    const ta = fromData(a, [n]), tb = fromData(b, [n]);
    const s = add(ta, tb, 0.5);
    const c = copy(ta);
    addInPlace(c, tb, -2);
    const sc = copy(tb);
    scaleInPlace(sc, 3);
    const fl = zeros([7, 3]);
    fill(fl, 2.5);
    const [gs, gc, gsc, gfl, ga] = await readMany([s, c, sc, fl, ta]);
    // a GPU may fuse a + alpha·b into one fma: allow one rounding of difference
    const near = (got: number[], exp: (i: number) => number) => got.every((g, i) => Math.abs(g - exp(i)) <= 2.4e-7 * Math.max(1, Math.abs(exp(i))));
    expect(near(Array.from(gs), (i) => f(a[i] + f(0.5 * b[i])))).toBe(true);
    expect(near(Array.from(gc), (i) => f(a[i] + f(-2 * b[i])))).toBe(true);
    expect(Array.from(gsc)).toEqual(Array.from(b, (x) => f(3 * x)));
    expect(Array.from(gfl)).toEqual(new Array(21).fill(2.5));
    expect(Array.from(ga)).toEqual(Array.from(a)); // the copy was modified, not the source
  });

  it('window reorder: gather 4-row groups by window_index, scatter back restores the order', async () => {
    const M = 13, C = 5, N = 4 * M;
    const x = rand(N * C, 3);
    const perm = Int32Array.from({ length: M }, (_, i) => (i * 5 + 3) % M); // a permutation of 0..12
    const tx = fromData(x, [N, C]), ti = fromData(perm, [M]);
    const win = gatherRows(tx.view([M, 4 * C]), ti);
    const back = zeros([M, 4 * C]);
    scatterRows(win, ti, back);
    const [gw, gb] = await readMany([win, back]);
    expect(win.shape).toEqual([M, 4 * C]);
    expect(Array.from(gw)).toEqual(Array.from(gatherRowsCpu(x, 4 * C, perm)));
    expect(Array.from(gb)).toEqual(Array.from(x));
  });

  it('scatters image embeddings into the image-pad rows; negative indices are skipped / zero', async () => {
    const L = 9, H = 6, emb = rand(L * H, 4), img = rand(3 * H, 5);
    const pads = Int32Array.from([2, 3, 7]);
    const te = fromData(emb, [L, H]);
    scatterRows(fromData(img, [3, H]), fromData(pads, [3]), te);
    const g = gatherRows(fromData(rand(2 * H, 6), [2, H]), fromData([-1, 1], [2], 'i32'));
    const skip = fromData(emb, [L, H]);
    scatterRows(fromData(img.slice(0, 2 * H), [2, H]), fromData([-1, 0], [2], 'i32'), skip);
    const [ge, gg, gs] = await readMany([te, g, skip]);
    expect(Array.from(ge)).toEqual(Array.from(scatterRowsCpu(img, H, pads, emb)));
    expect(Array.from(gg.slice(0, H))).toEqual(new Array(H).fill(0));
    expect(Array.from(gs.slice(H))).toEqual(Array.from(emb.slice(H)));
    expect(Array.from(gs.slice(0, H))).toEqual(Array.from(img.slice(H, 2 * H)));
  });

  it('names tensors on bad input', () => {
    const a = fromData(rand(6, 1), [2, 3], 'f32', 'residual'), b = fromData(rand(4, 1), [4], 'f32', 'attn_out');
    expect(() => add(a, b)).toThrow(/"residual" \[2,3\] and "attn_out" \[4\]/);
    expect(() => addInPlace(a, a)).toThrow(/share a buffer/);
    expect(() => scatterRows(b, fromData([0], [1], 'i32'), a)).toThrow(/src "attn_out" \[4\] should be 1 rows of width 3/);
  });
});
