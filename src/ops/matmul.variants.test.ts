// Feature variants of the matmul behind the startup self-test (src/gpu/selftest.ts): the subgroup
// kernel really runs here (SwiftShader has `subgroups`); the f16 one cannot compile here
// (SwiftShader has no shader-f16), so it is checked two ways: refused when an adapter claims the
// feature but cannot compile it, and its indexing run with f16 spelled f32 (same code, f32 types).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { gpu } from '../gpu/device.ts';
import { dispatch, kernel } from '../gpu/kernel.ts';
import { empty, fromData, packBf16, read, unpackBf16 } from '../gpu/tensor.ts';
import { registerVariant, runSelfTest, unregisterVariant, variantActive } from '../gpu/selftest.ts';
import { gemm, matmul, pickKernel, splitVariants } from './matmul.ts';
import { gemmCpu, matmulCpu } from './cpu/matmul.ts';
import { check, TOL } from '../parity/golden.ts';
import shader from '../../shaders/matmul.wgsl?raw';

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await runSelfTest({ disable: true }); await closeGpu(); });

function rand(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return ((s / 2 ** 32) * 2 - 1) * scale; });
}
const bf16Round = (x: Float32Array) => unpackBf16(packBf16(x), x.length);
function expectClose(got: ArrayLike<number>, exp: ArrayLike<number>, what: string) {
  const c = check(what, got, exp, TOL.kernel);
  expect(c.err, `${what}: max err ${c.err} > tol ${c.tol}`).toBeLessThanOrEqual(c.tol);
}

describe('pickKernel (selection logic, any adapter)', () => {
  const base = { M: 2, N: 100, K: 512, transA: false, transB: true, bf16: true, accumulate: false, sab: 0, sbb: 0, variant: 'reg' as const };
  const none = () => false, all = () => true;
  it('uses a feature kernel only when its variant is active and the product is one it serves', () => {
    expect(pickKernel({ ...base, active: none })).toBe('nt4');
    expect(pickKernel({ ...base, active: all })).toBe('nt_sg');
    expect(pickKernel({ ...base, M: 64, active: all })).toBe('nt4'); // many rows: the register kernel
    expect(pickKernel({ ...base, K: 64, active: all })).toBe('nt4'); // short reduction
    expect(pickKernel({ ...base, K: 514, active: all })).toBe('gen'); // K % 4 != 0: no vec4 kernels at all
    expect(pickKernel({ ...base, transB: false, active: all })).toBe('nn4'); // dx = dy·W: not served
    expect(pickKernel({ ...base, M: 64, variant: 'tiled', active: none })).toBe('tiled');
    expect(pickKernel({ ...base, M: 64, variant: 'tiled', active: all })).toBe('tiled_h');
    expect(pickKernel({ ...base, M: 64, variant: 'tiled', bf16: false, active: all })).toBe('tiled'); // f32 weights: not the frozen base
    expect(pickKernel({ ...base, M: 64, variant: 'tiled', accumulate: true, active: all })).toBe('tiled'); // gradients: never f16
    expect(pickKernel({ ...base, M: 64, variant: 'tiled', transA: true, transB: false, active: all })).toBe('tiled');
    expect(pickKernel({ ...base, M: 64, variant: 'reg', active: (n) => n === 'matmul.tiled-f16' })).toBe('nt4'); // f16 tiles only replace the tiled kernel
    expect(pickKernel({ ...base, feature: 'none', active: all })).toBe('nt4');
  });
});

describe('subgroup split-K kernel (runs on this adapter)', () => {
  it('matches the CPU reference on odd shapes, bf16 and f32 weights, bias, accumulate, batches', async () => {
    for (const [M, N, K, batch] of [[1, 1, 4, 1], [3, 37, 516, 1], [5, 130, 260, 1], [2, 9, 8, 3], [9, 67, 1028, 1]]) {
      const xv = rand(batch * M * K, M + N), wv = bf16Round(rand(N * K, K)), bv = rand(N, 3), c0 = rand(batch * M * N, 4);
      for (const dt of ['bf16', 'f32'] as const) {
        const x = fromData(xv, batch > 1 ? [batch, M, K] : [M, K]), w = fromData(wv, [N, K], dt), b = fromData(bv, [N]);
        const y = gemm(x, w, { transB: true, bias: b, feature: 'subgroup' });
        const exp = new Float32Array(batch * M * N);
        for (let z = 0; z < batch; z++) exp.set(matmulCpu(xv.subarray(z * M * K, (z + 1) * M * K), wv, M, N, K, bv), z * M * N);
        expectClose(await read(y), exp, `nt_sg ${batch}×${M}×${N}×${K} ${dt}`);
        const acc = fromData(c0, y.shape);
        gemm(x, w, { transB: true, accumulate: true, alpha: 0.5, out: acc, feature: 'subgroup' });
        const expAcc = gemmCpu(xv.subarray(0, M * K), wv, M, N, K, { transB: true, alpha: 0.5, c: c0.slice(0, M * N) });
        expectClose((await read(acc)).subarray(0, M * N), expAcc, `nt_sg accumulate ${M}×${N}×${K} ${dt}`);
        for (const t of [x, w, b, y, acc]) t.release();
      }
    }
  });

  it('is activated by the self-test when the adapter has subgroups, and then used for few-row products', async () => {
    expect(gpu().features).toContain('subgroups');
    const r = await runSelfTest({ only: ['matmul.subgroup-splitk'], ignoreSpeed: true });
    expect(r.verdicts[0]).toMatchObject({ name: 'matmul.subgroup-splitk', status: 'active' });
    expect(variantActive('matmul.subgroup-splitk')).toBe(true);
    const [M, N, K] = [2, 21, 300];
    const xv = rand(M * K, 1), wv = bf16Round(rand(N * K, 2));
    const x = fromData(xv, [M, K]), w = fromData(wv, [N, K], 'bf16');
    expect(pickKernel({ M, N, K, transA: false, transB: true, bf16: true, accumulate: false, sab: 0, sbb: 0, variant: 'reg', active: variantActive })).toBe('nt_sg');
    const y = matmul(x, w);
    expectClose(await read(y), matmulCpu(xv, wv, M, N, K), 'matmul through the active variant');
    for (const t of [x, w, y]) t.release();
  });

  it('an adapter without the feature keeps the f32 path', async () => {
    const r = await runSelfTest({ features: [], ignoreSpeed: true });
    expect(r.active).toEqual([]);
    for (const v of r.verdicts) expect(v.status).toBe('unavailable');
    expect(variantActive('matmul.subgroup-splitk')).toBe(false);
    expect(r.summary).toMatch(/none active/);
  });

  it('a correct variant that is slower on this adapter is not used (timing gate)', async () => {
    registerVariant({ name: 'test.slow', feature: 'subgroups', what: 'test', check: async () => ({ maxErr: 0, tol: 1 }), time: async () => ({ variantMs: 2, f32Ms: 1, shape: '1×1×1' }) });
    try {
      const r = await runSelfTest({ only: ['test.slow'] });
      expect(r.verdicts[0].status).toBe('refused');
      expect(variantActive('test.slow')).toBe(false);
      expect((await runSelfTest({ only: ['test.slow'], ignoreSpeed: true })).verdicts[0].status).toBe('active');
    } finally {
      unregisterVariant('test.slow');
    }
  });
});

describe('deliberately wrong variants are refused', () => {
  // a real subgroup kernel with a bug: it folds the lanes with subgroupMax instead of subgroupAdd
  const wrong = kernel('wrong.wgsl', `enable subgroups;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
var<workgroup> part: array<f32, 64>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_index) li: u32) {
  part[li] = 0.0;
  workgroupBarrier();
  let s = subgroupMax(x[li]);
  if (subgroupElect()) { part[li] = s; }
  workgroupBarrier();
  if (li == 0u) { var t = 0.0; for (var i = 0u; i < 64u; i++) { t += part[i]; } y[0] = t; }
}`, 'main');
  it('a numerically wrong subgroup sum is refused and nothing is activated', async () => {
    registerVariant({
      name: 'test.wrong-sum', feature: 'subgroups', what: 'sum of 64 values',
      async check() {
        const v = rand(64, 9);
        const x = fromData(v, [64]), y = empty([1]);
        dispatch(wrong, [x, y], 1);
        const got = (await read(y))[0], exp = v.reduce((a, b) => a + b, 0);
        x.release(); y.release();
        return { maxErr: Math.abs(got - exp), tol: 64 * 2 ** -22 };
      },
    });
    try {
      const r = await runSelfTest({ only: ['test.wrong-sum'] });
      expect(r.verdicts[0].status, JSON.stringify(r.verdicts[0])).toBe('refused');
      expect(r.verdicts[0], JSON.stringify(r.verdicts[0])).toHaveProperty('maxErr');
      expect(r.verdicts[0]).toHaveProperty('reason', expect.stringMatching(/max error .* > tolerance/));
      expect(variantActive('test.wrong-sum')).toBe(false);
    } finally {
      unregisterVariant('test.wrong-sum');
    }
  });

  it('a variant that throws is refused with its message', async () => {
    registerVariant({ name: 'test.throws', feature: 'subgroups', what: 'x', check: async () => { throw new Error('boom'); } });
    try {
      const r = await runSelfTest({ only: ['test.throws'] });
      expect(r.verdicts[0]).toMatchObject({ status: 'refused', reason: 'boom' });
    } finally {
      unregisterVariant('test.throws');
    }
  });

  it('an adapter that claims shader-f16 but cannot compile it: the f16 variant is refused, the tiled f32 kernel runs', async () => {
    const r = await runSelfTest({ features: ['shader-f16'], only: ['matmul.tiled-f16'] });
    expect(r.verdicts[0].status).toBe('refused');
    expect(r.verdicts[0]).toHaveProperty('reason', expect.stringMatching(/f16/));
    expect(variantActive('matmul.tiled-f16')).toBe(false);
    const [M, N, K] = [65, 33, 40];
    const xv = rand(M * K, 5), wv = bf16Round(rand(N * K, 6));
    const x = fromData(xv, [M, K]), w = fromData(wv, [N, K], 'bf16');
    const y = matmul(x, w, { variant: 'tiled' });
    expectClose(await read(y), matmulCpu(xv, wv, M, N, K), 'tiled after the refusal');
    for (const t of [x, w, y]) t.release();
  });
});

describe('f16 tiled kernel, spelled in f32 (its indexing; the f16 rounding itself needs an f16 adapter)', () => {
  it('tiled_h with f16 → f32 matches the CPU reference on odd shapes', async () => {
    const { base, variants } = splitVariants(shader);
    const asF32 = base + variants.f16.replace(/\bvec4h\b/g, 'vec4f').replace(/\bf16\b/g, 'f32');
    for (const [M, N, K] of [[67, 45, 132], [1, 1, 1], [130, 70, 19]]) {
      const xv = rand(M * K, M), wv = bf16Round(rand(N * K, N, 0.1)), bv = rand(N, 7);
      const x = fromData(xv, [M, K]), w = fromData(wv, [N, K], 'bf16'), b = fromData(bv, [N]), y = empty([M, N]);
      const params = [M, N, K, 1, 1, 0, K, 1, 1, K, M * K, 0, M * N];
      dispatch(kernel('matmul.wgsl (f16 as f32)', asF32, 'tiled_h', { BF16: 1 }), [x, undefined, w.buffer, undefined, w, undefined, b, y], [Math.ceil(N / 64), Math.ceil(M / 64), 1], params, 'uuuuffuuuuuuu');
      expectClose(await read(y), matmulCpu(xv, wv, M, N, K, bv), `tiled_h (f32 types) ${M}×${N}×${K}`);
      for (const t of [x, w, b, y]) t.release();
    }
  });
});
