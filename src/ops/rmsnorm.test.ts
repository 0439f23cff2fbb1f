import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, readMany, unpackBf16, packBf16 } from '../gpu/tensor.ts';
import { rmsnorm, rmsnormBackward } from './rmsnorm.ts';
import { rmsnormBackwardCpu, rmsnormCpu } from './cpu/rmsnorm.ts';
import { rand, expectClose } from './testUtil.ts';

/** max |got − exp| ≤ atol + rtol · max |exp| (golden README §11) */

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

describe('rmsnorm', () => {
  const shapes: number[][] = [[7, 37], [33, 96], [5, 1031], [2, 3, 64], [1, 1]];
  for (const bf16 of [false, true])
    for (const shape of shapes) {
      it(`GPU = CPU forward and backward, x [${shape}], weight ${bf16 ? 'bf16' : 'f32'}`, async () => {
        const dim = shape[shape.length - 1], n = shape.reduce((a, b) => a * b);
        const x = rand(n, 1 + n, 2), dy = rand(n, 2 + n);
        let w = rand(dim, 3 + dim, 1.5);
        if (bf16) w = unpackBf16(packBf16(w), dim); // the CPU sees the rounded weights
        const eps = 1e-6;
        const tx = fromData(x, shape), tw = fromData(w, [dim], bf16 ? 'bf16' : 'f32'), tdy = fromData(dy, shape);
        const { y, rstd } = rmsnorm(tx, tw, eps);
        const { dx, dweight } = rmsnormBackward(tdy, tx, tw, rstd, { dweight: true });
        const [gy, grstd, gdx, gdw] = await readMany([y, rstd, dx, dweight!]);
        const ref = rmsnormCpu(x, w, dim, eps), bref = rmsnormBackwardCpu(dy, x, w, dim, eps);
        expect(y.shape).toEqual(shape);
        expectClose(gy, ref.y, 'y');
        expectClose(grstd, ref.rstd, 'rstd');
        expectClose(gdx, bref.dx, 'dx');
        expectClose(gdw, bref.dweight, 'dweight');
        for (const t of [tx, tw, tdy, y, rstd, dx, dweight!]) t.release();
      });
    }

  it('backward without dweight returns only dx', () => {
    const tx = fromData(rand(12, 5), [3, 4]), tw = fromData(rand(4, 6), [4]);
    const { rstd, y } = rmsnorm(tx, tw, 1e-6);
    const r = rmsnormBackward(y, tx, tw, rstd);
    expect(r.dweight).toBeUndefined();
    expect(r.dx.shape).toEqual([3, 4]);
  });

  it('names tensors and sizes on a shape mismatch', () => {
    const tx = fromData(rand(12, 5), [3, 4], 'f32', 'h'), tw = fromData(rand(5, 6), [5], 'f32', 'norm.weight');
    expect(() => rmsnorm(tx, tw, 1e-6)).toThrow(/norm\.weight.*\[5\].*last dim 4.*"h"/);
  });

  it('CPU backward matches central finite differences', () => {
    const rows = 3, dim = 7, eps = 1e-6;
    const x = rand(rows * dim, 11, 1.5), w = rand(dim, 12), dy = rand(rows * dim, 13);
    const loss = (xx: Float32Array, ww: Float32Array) => rmsnormCpu(xx, ww, dim, eps).y.reduce((s, v, i) => s + v * dy[i], 0);
    const { dx, dweight } = rmsnormBackwardCpu(dy, x, w, dim, eps);
    const fd = (arr: Float32Array, i: number) => {
      const a = Float32Array.from(arr), b = Float32Array.from(arr);
      a[i] += 1e-2; b[i] -= 1e-2;
      const h = a[i] - b[i];
      return arr === x ? (loss(a, w) - loss(b, w)) / h : (loss(x, a) - loss(x, b)) / h;
    };
    expectClose(Array.from(x, (_, i) => fd(x, i)), dx, 'dx vs FD', 2e-3, 2e-3);
    expectClose(Array.from(w, (_, i) => fd(w, i)), dweight, 'dweight vs FD', 2e-3, 2e-3);
  });
});
