import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, packBf16, read, readMany, unpackBf16 } from '../gpu/tensor.ts';
import { patchEmbed, patchEmbedBackward } from './patchEmbed.ts';
import { patchEmbedBackwardCpu, patchEmbedCpu } from './cpu/patchEmbed.ts';
import { setMatmulVariant, type MatmulVariant } from './matmul.ts';
import { check, TOL } from '../parity/golden.ts';

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { setMatmulVariant(undefined); await closeGpu(); });

let seed = 3;
function rand(n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    out[i] = (seed / 2 ** 32) * 2 - 1;
  }
  return out;
}
function expectClose(got: ArrayLike<number>, exp: ArrayLike<number>, what: string) {
  const c = check(what, got, exp, TOL.kernel);
  expect(c.err, `${what}: max err ${c.err} > tol ${c.tol}`).toBeLessThanOrEqual(c.tol);
}

describe.each(['reg', 'tiled'] as MatmulVariant[])('conv3d patch embed (%s)', (variant) => {
  beforeAll(() => setMatmulVariant(variant));
  // real geometry (3, 2, 14, 14) with odd N / Co, and a small odd geometry (generic kernels)
  it.each([[7, 19, 3, 2, 14], [5, 6, 1, 1, 3], [1, 1, 3, 2, 14]])('N=%i Co=%i C=%i T=%i P=%i: out, dweight, dpixel_values (f32 and bf16 weight)', async (n, co, c, t, p) => {
    const d = { n, co, c, t, p }, kin = c * t * p * p;
    const pv = rand(n * kin), w = rand(co * kin), dy = rand(n * co);
    const tpv = fromData(pv, [n, kin]), tdy = fromData(dy, [n, co]);
    for (const wdt of ['f32', 'bf16'] as const) {
      const wr = wdt === 'bf16' ? unpackBf16(packBf16(w), w.length) : w;
      const tw = fromData(w, [co, c, t, p, p], wdt);
      const out = patchEmbed(tpv, tw);
      const g = patchEmbedBackward(tdy, tpv, tw);
      expect(g.dweight!.shape).toEqual([co, c, t, p, p]);
      const [go, gdw, gdp] = await readMany([out, g.dweight!, g.dpixelValues!]);
      const bw = patchEmbedBackwardCpu(dy, pv, wr, d);
      expectClose(go, patchEmbedCpu(pv, wr, d), `out (${wdt})`);
      expectClose(gdw, bw.dweight, `dweight (${wdt})`);
      expectClose(gdp, bw.dpixelValues, `dpixel_values (${wdt})`);
      patchEmbedBackward(tdy, tpv, tw, { dweight: g.dweight, accumulate: true, needDpixel: false });
      expectClose(await read(g.dweight!), bw.dweight.map((v) => 2 * v), `dweight accumulated (${wdt})`);
      for (const x of [tw, out, g.dweight!, g.dpixelValues!]) x.release();
    }
    tpv.release(); tdy.release();
  });

  it('finite differences agree with dweight and dpixel_values', async () => {
    const n = 2, co = 3, c = 1, t = 1, p = 2, kin = 4;
    const pv = rand(n * kin), w = rand(co * kin), r = rand(n * co);
    const loss = async (pvv: Float32Array, wv: Float32Array) => {
      const a = fromData(pvv, [n, kin]), b = fromData(wv, [co, c, t, p, p]);
      const y = await read(patchEmbed(a, b));
      a.release(); b.release();
      return y.reduce((s, v, i) => s + v * r[i], 0);
    };
    const g = patchEmbedBackward(fromData(r, [n, co]), fromData(pv, [n, kin]), fromData(w, [co, c, t, p, p]));
    const [dw, dp] = await readMany([g.dweight!, g.dpixelValues!]);
    const eps = 1e-2;
    for (const i of [0, 5, 11]) {
      const a = w.slice(), b = w.slice(); a[i] += eps; b[i] -= eps;
      expect(Math.abs(((await loss(pv, a)) - (await loss(pv, b))) / (2 * eps) - dw[i])).toBeLessThan(2e-3);
    }
    for (const i of [1, 6]) {
      const a = pv.slice(), b = pv.slice(); a[i] += eps; b[i] -= eps;
      expect(Math.abs(((await loss(a, w)) - (await loss(b, w))) / (2 * eps) - dp[i])).toBeLessThan(2e-3);
    }
  });
});
