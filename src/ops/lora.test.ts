import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, packBf16, read, readMany, unpackBf16, zeros } from '../gpu/tensor.ts';
import { loraLinear, loraLinearBackward } from './lora.ts';
import { loraLinearBackwardCpu, loraLinearCpu } from './cpu/lora.ts';
import { setMatmulVariant, type MatmulVariant } from './matmul.ts';
import { check, TOL } from '../parity/golden.ts';

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { setMatmulVariant(undefined); await closeGpu(); });

let seed = 7;
function rand(n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    out[i] = ((seed / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}
function expectClose(got: ArrayLike<number>, exp: ArrayLike<number>, what: string) {
  const c = check(what, got, exp, TOL.kernel);
  expect(c.err, `${what}: max err ${c.err} > tol ${c.tol}`).toBeLessThanOrEqual(c.tol);
}

// [T, in, out, r]: odd sizes, r = 1, 3 (generic kernel) and 4, 8 (vec4 kernels)
const SHAPES: [number, number, number, number][] = [[9, 37, 29, 3], [1, 1, 1, 1], [13, 64, 48, 4], [5, 160, 66, 8]];

describe.each(['reg', 'tiled'] as MatmulVariant[])('lora linear (%s)', (variant) => {
  beforeAll(() => setMatmulVariant(variant));
  for (const wdt of ['f32', 'bf16'] as const) {
    it.each(SHAPES)(`forward + backward vs CPU, W ${wdt}, T=%i in=%i out=%i r=%i`, async (T, inF, outF, r) => {
      const x = rand(T * inF), w0 = rand(outF * inF), bias = rand(outF), a = rand(r * inF), b = rand(outF * r), dy = rand(T * outF);
      const w = wdt === 'bf16' ? unpackBf16(packBf16(w0), w0.length) : w0;
      const scaling = 2 / Math.sqrt(r);
      const l = { weight: fromData(w0, [outF, inF], wdt, 'w'), bias: fromData(bias, [outF], 'f32', 'b'), loraA: fromData(a, [r, inF], 'f32', 'A'), loraB: fromData(b, [outF, r], 'f32', 'B'), scaling };
      const tx = fromData(x, [T, inF], 'f32', 'x'), tdy = fromData(dy, [T, outF], 'f32', 'dy');
      const { y, xa } = loraLinear(tx, l);
      const g = loraLinearBackward(tdy, tx, xa!, l);
      const [gy, gxa, gdx, gdA, gdB] = await readMany([y, xa!, g.dx!, g.dA, g.dB]);
      const ref = { w, bias, a, b, scaling, inF, outF, r };
      const f = loraLinearCpu(x, T, ref), bw = loraLinearBackwardCpu(dy, x, T, ref);
      expectClose(gy, f.y, 'y'); expectClose(gxa, f.xa, 'xa');
      expectClose(gdx, bw.dx, 'dx'); expectClose(gdA, bw.dA, 'dA'); expectClose(gdB, bw.dB, 'dB');
      // accumulate: a second backward adds the same gradients again
      loraLinearBackward(tdy, tx, xa!, l, { dA: g.dA, dB: g.dB, accumulate: true, needDx: false });
      const [gdA2, gdB2] = await readMany([g.dA, g.dB]);
      expectClose(gdA2, bw.dA.map((v) => 2 * v), 'dA accumulated'); expectClose(gdB2, bw.dB.map((v) => 2 * v), 'dB accumulated');
      for (const t of [l.weight, l.bias, l.loraA, l.loraB, tx, tdy, y, xa!, g.dx!, g.dA, g.dB]) t.release();
    });
  }
});

describe('lora linear extras', () => {
  beforeAll(() => setMatmulVariant(undefined));

  it('disabled adapter gives the base layer', async () => {
    const T = 3, inF = 6, outF = 5, r = 2;
    const x = rand(T * inF), w = rand(outF * inF), a = rand(r * inF), b = rand(outF * r);
    const l = { weight: fromData(w, [outF, inF]), loraA: fromData(a, [r, inF]), loraB: fromData(b, [outF, r]), scaling: 4 };
    const tx = fromData(x, [T, inF]);
    const { y, xa } = loraLinear(tx, l, { enabled: false });
    expect(xa).toBeUndefined();
    expectClose(await read(y), loraLinearCpu(x, T, { w, a, b: new Float32Array(outF * r), scaling: 0, inF, outF, r }).y, 'y base');
  });

  it('finite differences agree with dx, dA, dB', async () => {
    const T = 3, inF = 5, outF = 4, r = 2, s = 1.5;
    const x = rand(T * inF), w = rand(outF * inF), a = rand(r * inF), b = rand(outF * r), dyv = rand(T * outF);
    const loss = async (xv: Float32Array, av: Float32Array, bv: Float32Array) => {
      const l = { weight: fromData(w, [outF, inF]), loraA: fromData(av, [r, inF]), loraB: fromData(bv, [outF, r]), scaling: s };
      const tx = fromData(xv, [T, inF]);
      const { y, xa } = loraLinear(tx, l);
      const yv = await read(y);
      for (const t of [l.weight, l.loraA, l.loraB, tx, y, xa!]) t.release();
      return yv.reduce((acc, v, i) => acc + v * dyv[i], 0);
    };
    const l = { weight: fromData(w, [outF, inF]), loraA: fromData(a, [r, inF]), loraB: fromData(b, [outF, r]), scaling: s };
    const tx = fromData(x, [T, inF]), tdy = fromData(dyv, [T, outF]);
    const { xa } = loraLinear(tx, l);
    const g = loraLinearBackward(tdy, tx, xa!, l);
    const [dx, dA, dB] = await readMany([g.dx!, g.dA, g.dB]);
    const eps = 1e-2;
    const fd = async (which: 0 | 1 | 2, i: number) => {
      const vs = [x.slice(), a.slice(), b.slice()];
      vs[which][i] += eps;
      const lp = await loss(vs[0], vs[1], vs[2]);
      vs[which][i] -= 2 * eps;
      const lm = await loss(vs[0], vs[1], vs[2]);
      return (lp - lm) / (2 * eps);
    };
    for (const i of [0, 7, 14]) expect(Math.abs((await fd(0, i)) - dx[i])).toBeLessThan(2e-3 * Math.max(1, Math.abs(dx[i])));
    for (const i of [0, 3, 9]) expect(Math.abs((await fd(1, i)) - dA[i])).toBeLessThan(2e-3 * Math.max(1, Math.abs(dA[i])));
    for (const i of [0, 5, 7]) expect(Math.abs((await fd(2, i)) - dB[i])).toBeLessThan(2e-3 * Math.max(1, Math.abs(dB[i])));
  });

  it('names tensors in shape errors', () => {
    const l = { weight: zeros([4, 6], 'bf16', 'q_proj.weight'), loraA: zeros([2, 5], 'f32', 'q_proj.lora_A'), loraB: zeros([4, 2], 'f32', 'q_proj.lora_B'), scaling: 2 };
    expect(() => loraLinear(zeros([3, 6]), l)).toThrow(/lora_A "q_proj\.lora_A" must be \[r, 6\], got \[2,5\]/);
  });
});
