import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, readMany } from '../gpu/tensor.ts';
import { gelu, geluBackward } from './gelu.ts';
import { erf64, erfc64, geluBackwardCpu, geluCpu, normCdf } from './cpu/gelu.ts';
import { rand, expectClose } from './testUtil.ts';

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

describe('gelu (exact erf)', () => {
  it('f64 reference erf/erfc agrees with known values', () => {
    expect(erf64(0.5)).toBeCloseTo(0.5204998778130465, 15);
    expect(erf64(1)).toBeCloseTo(0.8427007929497149, 15);
    expect(erfc64(3) / 2.209049699858544e-5).toBeCloseTo(1, 12);
    expect(erfc64(5) / 1.5374597944280349e-12).toBeCloseTo(1, 12);
    expect(erfc64(-2)).toBeCloseTo(1.9953222650189527, 15);
    expect(normCdf(-1)).toBeCloseTo(0.15865525393145707, 15);
  });

  for (const shape of [[7, 37], [3, 1031], [1]]) {
    it(`GPU = CPU forward and backward [${shape}]`, async () => {
      const n = shape.reduce((a, b) => a * b);
      const x = rand(n, 1 + n, 6), dy = rand(n, 2 + n);
      const tx = fromData(x, shape), tdy = fromData(dy, shape);
      const y = gelu(tx), dx = geluBackward(tdy, tx);
      const [gy, gdx] = await readMany([y, dx]);
      expectClose(gy, geluCpu(x), 'y');
      expectClose(gdx, geluBackwardCpu(dy, x), 'dx');
      for (const t of [tx, tdy, y, dx]) t.release();
    });
  }

  it('erf is precise to ~1e-7 over a dense grid and in the tails', async () => {
    // x in [-12, 12] step 1/512, plus values around the branch point |x/√2| = 0.75
    const xs: number[] = [];
    for (let i = -12 * 512; i <= 12 * 512; i++) xs.push(i / 512);
    for (let i = -50; i <= 50; i++) xs.push(0.75 * Math.SQRT2 + i * 1e-6, -0.75 * Math.SQRT2 + i * 1e-6);
    xs.push(-40, -1e4, 40, 1e4);
    const x = Float32Array.from(xs), ones = new Float32Array(x.length).fill(1);
    const tx = fromData(x, [x.length]), tdy = fromData(ones, [x.length]);
    const y = gelu(tx), dx = geluBackward(tdy, tx);
    const [gy, gdx] = await readMany([y, dx]);
    let worstY = 0, worstD = 0;
    for (let i = 0; i < x.length; i++) {
      const v = x[i], cdf = normCdf(v), bound = Math.max(1, Math.abs(v));
      worstY = Math.max(worstY, Math.abs(gy[i] - v * cdf) / bound);
      worstD = Math.max(worstD, Math.abs(gdx[i] - (cdf + (v * Math.exp(-0.5 * v * v)) / Math.sqrt(2 * Math.PI))) / bound);
    }
    console.log(`gelu max error / max(1,|x|): y ${worstY.toExponential(2)}, dx ${worstD.toExponential(2)}`);
    // f32 output rounding alone is up to 6e-8·|y|
    expect(worstY, 'gelu error / max(1,|x|)').toBeLessThan(2.5e-7);
    expect(worstD, 'gelu\' error / max(1,|x|)').toBeLessThan(2.5e-7);
  });

  it('CPU backward matches central finite differences', () => {
    const x = rand(30, 5, 4), dy = rand(30, 6);
    const dx = geluBackwardCpu(dy, x), h = 1e-4;
    const fd = Array.from(x, (v, i) => (dy[i] * ((v + h) * normCdf(v + h) - (v - h) * normCdf(v - h))) / (2 * h));
    expectClose(fd, dx, 'dx vs FD', 1e-6, 1e-6);
  });
});
