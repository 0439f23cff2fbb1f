import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, readMany } from '../gpu/tensor.ts';
import { swiglu, swigluBackward } from './swiglu.ts';
import { swigluBackwardCpu, swigluCpu } from './cpu/swiglu.ts';
import { rand, expectClose } from './testUtil.ts';

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

describe('swiglu', () => {
  for (const shape of [[7, 37], [33, 96], [3, 1031], [1]]) {
    it(`GPU = CPU forward and backward [${shape}]`, async () => {
      const n = shape.reduce((a, b) => a * b);
      const g = rand(n, 1 + n, 8), u = rand(n, 2 + n, 2), dy = rand(n, 3 + n);
      const tg = fromData(g, shape), tu = fromData(u, shape), tdy = fromData(dy, shape);
      const y = swiglu(tg, tu);
      const { dgate, dup } = swigluBackward(tdy, tg, tu);
      const [gy, gdg, gdu] = await readMany([y, dgate, dup]);
      const b = swigluBackwardCpu(dy, g, u);
      expectClose(gy, swigluCpu(g, u), 'y');
      expectClose(gdg, b.dgate, 'dgate');
      expectClose(gdu, b.dup, 'dup');
      for (const t of [tg, tu, tdy, y, dgate, dup]) t.release();
    });
  }

  it('stays finite at large |gate|', async () => {
    const g = new Float32Array([-1e4, -200, -90, 90, 200, 1e4]), u = new Float32Array(6).fill(1);
    const tg = fromData(g, [6]), tu = fromData(u, [6]);
    const y = swiglu(tg, tu);
    const { dgate, dup } = swigluBackward(tu, tg, tu);
    const [gy, gdg, gdu] = await readMany([y, dgate, dup]);
    expectClose(gy, swigluCpu(g, u), 'y', 1e-5, 1e-6);
    expectClose(gdg, swigluBackwardCpu(u, g, u).dgate, 'dgate', 1e-5, 1e-6);
    expectClose(gdu, swigluBackwardCpu(u, g, u).dup, 'dup', 1e-5, 1e-6);
  });

  it('rejects mismatched sizes by name', () => {
    expect(() => swiglu(fromData(rand(6, 1), [2, 3], 'f32', 'gate'), fromData(rand(4, 1), [4], 'f32', 'up'))).toThrow(/"up" \[4\].*"gate" \[2,3\]/);
  });

  it('CPU backward matches central finite differences', () => {
    const g = rand(20, 7, 4), u = rand(20, 8, 2), dy = rand(20, 9);
    const { dgate, dup } = swigluBackwardCpu(dy, g, u);
    const h = 1e-3;
    const fdg = Array.from(g, (v, i) => (dy[i] * ((v + h) / (1 + Math.exp(-(v + h))) - (v - h) / (1 + Math.exp(-(v - h)))) * u[i]) / (2 * h));
    const fdu = Array.from(u, (_, i) => (swigluCpu([g[i]], [u[i] + h])[0] - swigluCpu([g[i]], [u[i] - h])[0]) * dy[i] / (2 * h));
    expectClose(fdg, dgate, 'dgate vs FD', 1e-4, 1e-4);
    expectClose(fdu, dup, 'dup vs FD', 2e-3, 2e-3);
  });
});
