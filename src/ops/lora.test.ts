import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, packBf16, read, readMany, unpackBf16, zeros } from '../gpu/tensor.ts';
import { loraLinear, loraLinearBackward, loraLinearParts, loraLinearPartsBackward } from './lora.ts';
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

  it('dropout: forward and backward equal the CPU reference with the same hash mask', async () => {
    const T = 7, inF = 37, outF = 29, r = 3, s = 1.25;
    const x = rand(T * inF), w = rand(outF * inF), bias = rand(outF), a = rand(r * inF), b = rand(outF * r), dy = rand(T * outF);
    const l = { weight: fromData(w, [outF, inF], 'f32', 'w'), bias: fromData(bias, [outF], 'f32', 'b'), loraA: fromData(a, [r, inF], 'f32', 'A'), loraB: fromData(b, [outF, r], 'f32', 'B'), scaling: s };
    const tx = fromData(x, [T, inF], 'f32', 'x'), tdy = fromData(dy, [T, outF], 'f32', 'dy');
    const d = { p: 0.3, seed: 99, stream: 5 };
    const ref = { w, bias, a, b, scaling: s, inF, outF, r };
    const { y, xa } = loraLinear(tx, l, { dropout: d });
    const g = loraLinearBackward(tdy, tx, xa!, l, { dropout: d });
    const [gy, gdx, gdA, gdB] = await readMany([y, g.dx!, g.dA, g.dB]);
    const f = loraLinearCpu(x, T, ref, d), bw = loraLinearBackwardCpu(dy, x, T, ref, d);
    expectClose(gy, f.y, 'y'); expectClose(gdx, bw.dx, 'dx'); expectClose(gdA, bw.dA, 'dA'); expectClose(gdB, bw.dB, 'dB');
    // not the no-dropout result, and p = 0 is exactly the plain path
    expect(check('y', gy, loraLinearCpu(x, T, ref).y, TOL.kernel).err).toBeGreaterThan(1e-3);
    const p0 = loraLinear(tx, l, { dropout: { ...d, p: 0 } }), plain = loraLinear(tx, l);
    const [y0, yp] = await readMany([p0.y, plain.y]);
    expect(Array.from(y0)).toEqual(Array.from(yp));
    for (const t of [l.weight, l.bias, l.loraA, l.loraB, tx, tdy, y, xa!, g.dx!, g.dA, g.dB, p0.y, p0.xa!, plain.y, plain.xa!]) t.release();
  });

  it('row-split weights (vision qkv) equal the fused LoRA linear, with dropout and accumulation', async () => {
    const T = 6, inF = 12, parts = [12, 12, 12], outF = 36, r = 3, s = 2;
    const x = rand(T * inF), w = rand(outF * inF), bias = rand(outF), a = rand(r * inF), b = rand(outF * r), dy = rand(T * outF);
    const d = { p: 0.25, seed: 7, stream: 1234 };
    const ref = { w, bias, a, b, scaling: s, inF, outF, r };
    const bw = loraLinearBackwardCpu(dy, x, T, ref, d); // dA, dB do not see W
    let o = 0;
    const ps = parts.map((n, j) => {
      const p = { weight: fromData(w.subarray(o * inF, (o + n) * inF), [n, inF], 'bf16', `w${j}`), bias: fromData(bias.subarray(o, o + n), [n], 'f32', `b${j}`) };
      o += n;
      return p;
    });
    // the CPU side with the same bf16-rounded weight
    const wq = Float32Array.from(unpackBf16(packBf16(w), w.length));
    const fq = loraLinearCpu(x, T, { ...ref, w: wq }, d), bwq = loraLinearBackwardCpu(dy, x, T, { ...ref, w: wq }, d);
    const l = { parts: ps, loraA: fromData(a, [r, inF], 'f32', 'A'), loraB: fromData(b, [outF, r], 'f32', 'B'), scaling: s };
    const tx = fromData(x, [T, inF], 'f32', 'x');
    const { ys, xa } = loraLinearParts(tx, l, { dropout: d });
    const cols = (full: Float32Array, j: number) => { const out: number[] = []; for (let t = 0; t < T; t++) out.push(...full.subarray(t * outF + 12 * j, t * outF + 12 * (j + 1))); return out; };
    const dys = parts.map((_, j) => fromData(Float32Array.from(cols(dy, j)), [T, 12], 'f32', `dy${j}`));
    const dA = zeros([r, inF], 'f32', 'dA'), dB = zeros([outF, r], 'f32', 'dB');
    const g = loraLinearPartsBackward(dys, tx, xa, l, { dA, dB, accumulate: true, dropout: d });
    const got = await readMany([...ys, g.dx, dA, dB]);
    ys.forEach((_, j) => expectClose(got[j], cols(fq.y, j), `y${j}`));
    expectClose(got[3], bwq.dx, 'dx'); expectClose(got[4], bw.dA, 'dA'); expectClose(got[5], bw.dB, 'dB');
    g.dx.release();
    loraLinearPartsBackward(dys, tx, xa, l, { dA, dB, accumulate: true, dropout: d }).dx.release();
    const [dA2, dB2] = await readMany([dA, dB]);
    expectClose(dA2, bw.dA.map((v) => 2 * v), 'dA accumulated'); expectClose(dB2, bw.dB.map((v) => 2 * v), 'dB accumulated');
    for (const t of [...ps.flatMap((p) => [p.weight, p.bias]), l.loraA, l.loraB, tx, xa, ...ys, ...dys, dA, dB]) t.release();
  });

  it('names tensors in shape errors', () => {
    const l = { weight: zeros([4, 6], 'bf16', 'q_proj.weight'), loraA: zeros([2, 5], 'f32', 'q_proj.lora_A'), loraB: zeros([4, 2], 'f32', 'q_proj.lora_B'), scaling: 2 };
    expect(() => loraLinear(zeros([3, 6]), l)).toThrow(/lora_A "q_proj\.lora_A" must be \[r, 6\], got \[2,5\]/);
  });
});
