import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, packBf16, read, unpackBf16, zeros, type Tensor } from '../gpu/tensor.ts';
import { biasGrad, gemm, matmul, matmulBackwardInput, matmulBackwardWeight, matmulVariant, setMatmulVariant, tuneMatmul, type MatmulVariant } from './matmul.ts';
import { biasGradCpu, gemmCpu, matmulBackwardInputCpu, matmulBackwardWeightCpu, matmulCpu } from './cpu/matmul.ts';
import { check, TOL } from '../parity/golden.ts';

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { setMatmulVariant(undefined); await closeGpu(); });

let seed = 1;
function rand(n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    out[i] = (seed / 2 ** 32) * 2 - 1;
  }
  return out;
}
const bf16Round = (x: Float32Array) => unpackBf16(packBf16(x), x.length);

function expectClose(got: ArrayLike<number>, exp: ArrayLike<number>, what: string) {
  const c = check(what, got, exp, TOL.kernel);
  expect(c.err, `${what}: max err ${c.err} > tol ${c.tol}`).toBeLessThanOrEqual(c.tol);
}

// odd shapes (not tile multiples) plus multiples of 4 that take the vec4 kernels
// (the last three are big enough for the 64-thread register kernels; the rest take 16-thread ones)
const SHAPES: [number, number, number][] = [[37, 53, 29], [1, 1, 1], [65, 130, 67], [12, 20, 16], [36, 44, 40], [5, 8, 12], [70, 260, 33], [100, 132, 68], [100, 68, 132]];
const VARIANTS: MatmulVariant[] = ['reg', 'tiled'];

describe.each(VARIANTS)('matmul (%s)', (variant) => {
  beforeAll(() => setMatmulVariant(variant));

  for (const wdt of ['f32', 'bf16'] as const) {
    it.each(SHAPES)(`forward y = x·Wᵀ + b, W ${wdt}, M=%i N=%i K=%i`, async (M, N, K) => {
      const x = rand(M * K), w = rand(N * K), b = rand(N);
      const wref = wdt === 'bf16' ? bf16Round(w) : w;
      const tx = fromData(x, [M, K]), tw = fromData(w, [N, K], wdt), tb = fromData(b, [N]);
      const y = matmul(tx, tw, { bias: tb });
      const y2 = matmul(tx, tw);
      expectClose(await read(y), matmulCpu(x, wref, M, N, K, b), 'y');
      expectClose(await read(y2), matmulCpu(x, wref, M, N, K), 'y (no bias)');
      for (const t of [tx, tw, tb, y, y2]) t.release();
    });

    it.each(SHAPES)(`backward dx = dy·W, W ${wdt}, M=%i N=%i K=%i (+ accumulate)`, async (M, N, K) => {
      const dy = rand(M * N), w = rand(N * K), prev = rand(M * K);
      const wref = wdt === 'bf16' ? bf16Round(w) : w;
      const tdy = fromData(dy, [M, N]), tw = fromData(w, [N, K], wdt);
      const dx = matmulBackwardInput(tdy, tw);
      const acc = fromData(prev, [M, K]);
      matmulBackwardInput(tdy, tw, { out: acc, accumulate: true, alpha: 0.5 });
      const exp = matmulBackwardInputCpu(dy, wref, M, N, K);
      expectClose(await read(dx), exp, 'dx');
      expectClose(await read(acc), exp.map((v, i) => 0.5 * v + prev[i]), 'dx accumulated');
      for (const t of [tdy, tw, dx, acc]) t.release();
    });
  }

  it.each(SHAPES)('backward dW = dyᵀ·x, M=%i N=%i K=%i (+ accumulate)', async (M, N, K) => {
    const dy = rand(M * N), x = rand(M * K), prev = rand(N * K);
    const tdy = fromData(dy, [M, N]), tx = fromData(x, [M, K]);
    const dw = matmulBackwardWeight(tdy, tx);
    const acc = fromData(prev, [N, K]);
    matmulBackwardWeight(tdy, tx, { out: acc, accumulate: true });
    const exp = matmulBackwardWeightCpu(dy, x, M, N, K);
    expectClose(await read(dw), exp, 'dW');
    expectClose(await read(acc), exp.map((v, i) => v + prev[i]), 'dW accumulated');
    for (const t of [tdy, tx, dw, acc]) t.release();
  });
});

describe('matmul extras', () => {
  beforeAll(() => setMatmulVariant(undefined));

  it('batched gemm with shared and per-batch B, all layouts', async () => {
    const Bt = 3, M = 7, N = 9, K = 6;
    for (const [transA, transB] of [[false, false], [false, true], [true, false], [true, true]]) {
      for (const shared of [true, false]) {
        const a = rand(Bt * M * K), b = rand((shared ? 1 : Bt) * K * N);
        const ta = fromData(a, transA ? [Bt, K, M] : [Bt, M, K]);
        const tb = fromData(b, shared ? (transB ? [N, K] : [K, N]) : transB ? [Bt, N, K] : [Bt, K, N]);
        const c = gemm(ta, tb, { transA, transB, alpha: 2 });
        expect(c.shape).toEqual([Bt, M, N]);
        const got = await read(c);
        for (let z = 0; z < Bt; z++) {
          const exp = gemmCpu(a.subarray(z * M * K, (z + 1) * M * K), shared ? b : b.subarray(z * K * N, (z + 1) * K * N), M, N, K, { transA, transB, alpha: 2 });
          expectClose(got.subarray(z * M * N, (z + 1) * M * N), exp, `batch ${z} transA=${transA} transB=${transB} shared=${shared}`);
        }
        for (const t of [ta, tb, c]) t.release();
      }
    }
  });

  it('3-D activations flatten to rows; bias grad', async () => {
    const x = rand(2 * 5 * 8), w = rand(12 * 8), dy = rand(2 * 5 * 12);
    const tx = fromData(x, [2, 5, 8]), tw = fromData(w, [12, 8]), tdy = fromData(dy, [2, 5, 12]);
    const y = matmul(tx, tw);
    expect(y.shape).toEqual([2, 5, 12]);
    expectClose(await read(y), matmulCpu(x, w, 10, 12, 8), 'y');
    const ones = fromData(new Float32Array(10).fill(1), [10]);
    const db = biasGrad(tdy, ones);
    expectClose(await read(db), biasGradCpu(dy, 10, 12), 'db');
    for (const t of [tx, tw, tdy, y, ones, db]) t.release();
  });

  it('finite differences agree with dx and dW (small shape)', async () => {
    const M = 3, N = 5, K = 7;
    const x = rand(M * K), w = rand(N * K), r = rand(M * N);
    // L = Σ r ⊙ (x·Wᵀ); dL/dx = r·W, dL/dW = rᵀ·x
    const loss = async (xv: Float32Array, wv: Float32Array) => {
      const tx = fromData(xv, [M, K]), tw = fromData(wv, [N, K]);
      const y = await read(matmul(tx, tw));
      tx.release(); tw.release();
      let s = 0;
      for (let i = 0; i < y.length; i++) s += y[i] * r[i];
      return s;
    };
    const tr = fromData(r, [M, N]), tx = fromData(x, [M, K]), tw = fromData(w, [N, K]);
    const dx = await read(matmulBackwardInput(tr, tw));
    const dw = await read(matmulBackwardWeight(tr, tx));
    const eps = 1e-2;
    for (const i of [0, 4, 11, 20]) {
      const xp = x.slice(), xm = x.slice();
      xp[i] += eps; xm[i] -= eps;
      const fd = ((await loss(xp, w)) - (await loss(xm, w))) / (2 * eps);
      expect(Math.abs(fd - dx[i])).toBeLessThan(2e-3 * Math.max(1, Math.abs(dx[i])));
    }
    for (const i of [0, 9, 17, 34]) {
      const wp = w.slice(), wm = w.slice();
      wp[i] += eps; wm[i] -= eps;
      const fd = ((await loss(x, wp)) - (await loss(x, wm))) / (2 * eps);
      expect(Math.abs(fd - dw[i])).toBeLessThan(2e-3 * Math.max(1, Math.abs(dw[i])));
    }
  });

  it('rejects mismatched shapes with the tensor names', () => {
    const x = zeros([3, 6], 'f32', 'h'), w = zeros([4, 5], 'bf16', 'q_proj.weight'), w6 = zeros([4, 6], 'bf16', 'k_proj.weight');
    expect(() => matmul(x, w)).toThrow(/x "h" \[3,6\] must end in 5.*q_proj\.weight|q_proj\.weight[\s\S]*h/);
    expect(() => gemm(x, w6, { transB: true, accumulate: true })).toThrow(/accumulate needs an existing out/);
    for (const t of [x, w, w6]) t.release();
  });

  it('tunes once per adapter and honours the override', async () => {
    const r = await tuneMatmul({ m: 32, n: 64, k: 64, reps: 1 });
    expect(['reg', 'tiled']).toContain(r.variant);
    expect(matmulVariant()).toBe(r.variant);
    setMatmulVariant('tiled');
    expect(matmulVariant()).toBe('tiled');
    setMatmulVariant(undefined);
  });
});

export type { Tensor };
