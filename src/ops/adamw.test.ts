import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, readMany, write, type Tensor } from '../gpu/tensor.ts';
import { adamwCheck, adamwStep, clipGrads, gradNorm, parseGradState, readGradState } from './adamw.ts';
import { adamwCpu, gradNormCpu, type AdamWHyper } from './cpu/adamw.ts';
import { rand } from './testUtil.ts';

/** elementwise: |got − exp| ≤ rtol·|exp| + atol */
function expectNear(got: ArrayLike<number>, exp: ArrayLike<number>, what: string, rtol = 1e-6, atol = 1e-12): void {
  expect(got.length, what).toBe(exp.length);
  let worst = 0, at = -1;
  for (let i = 0; i < exp.length; i++) {
    const e = Math.abs(got[i] - exp[i]) / (rtol * Math.abs(exp[i]) + atol);
    if (!(e <= worst)) { worst = e; at = i; }
  }
  expect(worst, `${what}: worst at ${at}: got ${got[at]} expected ${exp[at]}`).toBeLessThanOrEqual(1);
}

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

const hp: Omit<AdamWHyper, 'step'> = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };

describe('AdamW', () => {
  it('6 steps over two tensors match the torch-order CPU reference', async () => {
    const sizes = [1031, 37];
    const p = sizes.map((n, i) => rand(n, 10 + i)), m = sizes.map((n) => new Float32Array(n)), v = sizes.map((n) => new Float32Array(n));
    const tp = p.map((x, i) => fromData(x, [sizes[i]])), tm = m.map((x, i) => fromData(x, [sizes[i]])), tv = v.map((x, i) => fromData(x, [sizes[i]]));
    const tg = sizes.map((n) => fromData(new Float32Array(n), [n]));
    for (let step = 1; step <= 6; step++) {
      const g = sizes.map((n, i) => rand(n, 100 * step + i, step === 3 ? 1e-4 : 1)); // a tiny-gradient step too
      g.forEach((x, i) => write(tg[i], x));
      for (let i = 0; i < sizes.length; i++) {
        adamwStep(tp[i], tg[i], tm[i], tv[i], { ...hp, step });
        adamwCpu(p[i], g[i], m[i], v[i], { ...hp, step });
      }
    }
    const got = await readMany([...tp, ...tm, ...tv]);
    for (let i = 0; i < sizes.length; i++) {
      expectNear(got[i], p[i], `param ${i}`);
      expectNear(got[2 + i], m[i], `m ${i}`, 1e-6, 1e-12);
      expectNear(got[4 + i], v[i], `v ${i}`, 1e-6, 1e-15);
    }
  });

  it('follows torch.lerp for beta1 < 0.5 and no weight decay', async () => {
    const n = 300, h = { lr: 0.05, beta1: 0.3, beta2: 0.9, eps: 1e-6, weightDecay: 0 };
    const p = rand(n, 1), m = rand(n, 2, 0.1), v = Float32Array.from(rand(n, 3), Math.abs), g = rand(n, 4);
    const t = [p, g, m, v].map((x) => fromData(x, [n]));
    adamwStep(t[0], t[1], t[2], t[3], { ...h, step: 4 });
    adamwCpu(p, g, m, v, { ...h, step: 4 });
    const [gp, , gm, gv] = await readMany(t);
    expectNear(gp, p, 'param');
    expectNear(gm, m, 'm');
    expectNear(gv, v, 'v');
  });

  it('matches a hand-computed first step', async () => {
    // step 1: m = 0.1 g, v = 0.001 g², m̂/sqrt(v̂) = sign(g): p ← p(1 − lr·wd) − lr·g/(|g| + eps)
    const t = [fromData([1, -2], [2]), fromData([0.5, -0.25], [2]), fromData([0, 0], [2]), fromData([0, 0], [2])];
    adamwStep(t[0], t[1], t[2], t[3], { ...hp, step: 1 });
    const [gp] = await readMany([t[0]]);
    expect(gp[0]).toBeCloseTo(1 * (1 - 1e-5) - 1e-3, 6);
    expect(gp[1]).toBeCloseTo(-2 * (1 - 1e-5) + 1e-3, 6);
  });
});

describe('grad norm and clipping on the GPU', () => {
  it('global norm over tensors of many workgroups, clip scale, clipped AdamW', async () => {
    const sizes = [100_003, 4097, 1, 37];
    const g = sizes.map((n, i) => rand(n, 50 + i, 0.01 * (i + 1)));
    const tg = g.map((x, i) => fromData(x, [sizes[i]]));
    const maxNorm = 0.5;
    const state = gradNorm(tg, maxNorm);
    const st = await readGradState(state);
    const ref = gradNormCpu(g, maxNorm);
    expect(st.nonFinite).toBe(false);
    expect(Math.abs(st.norm - ref.norm) / ref.norm).toBeLessThan(2e-6);
    expect(ref.clipScale).toBeLessThan(1);
    expect(Math.abs(st.clipScale - ref.clipScale) / ref.clipScale).toBeLessThan(2e-6);
    console.log(`grad norm ${st.norm} (f64 ${ref.norm}), clip scale ${st.clipScale}`);
    // AdamW with the state uses the GPU clip scale: the CPU reference given the same scale agrees
    const n = sizes[1], p = rand(n, 7), m = new Float32Array(n), v = new Float32Array(n);
    const t = [p, m, v].map((x) => fromData(x, [n]));
    adamwStep(t[0], tg[1], t[1], t[2], { ...hp, step: 1 }, { state });
    adamwCpu(p, g[1], m, v, { ...hp, step: 1 }, st.clipScale);
    const [gp, gm] = await readMany([t[0], t[1]]);
    expectNear(gp, p, 'clipped param');
    expectNear(gm, m, 'clipped m');
    // in-place clipping as clip_grad_norm_ does
    clipGrads(tg, state);
    const [c1] = await readMany([tg[1]]);
    expectNear(c1, g[1].map((x) => Math.fround(x * st.clipScale)), 'clipped grad', 0, 1e-30);
  });

  it('no clipping below max norm, and none with maxNorm 0', async () => {
    const tg = [fromData([0.3, 0.4], [2])];
    expect(parseGradState(await readMany([gradNorm(tg, 1)]).then((r) => r[0]))).toEqual({ norm: expect.closeTo(0.5, 6), clipScale: 1, nonFinite: false, updateNonFinite: false, vanished: false });
    expect((await readGradState(gradNorm(tg))).clipScale).toBe(1);
  });

  for (const bad of [NaN, Infinity, -Infinity]) {
    it(`flags a ${bad} gradient and AdamW skips the step (unless told not to)`, async () => {
      const n = 5000, g = rand(n, 3);
      g[4321] = bad;
      const tg = [fromData(rand(10, 1), [10]), fromData(g, [n])];
      const state = gradNorm(tg, 1);
      const st = await readGradState(state);
      expect(st.nonFinite).toBe(true);
      const p0 = rand(n, 4);
      const ts: Tensor[] = [fromData(p0, [n]), fromData(new Float32Array(n), [n]), fromData(new Float32Array(n), [n])];
      adamwStep(ts[0], tg[1], ts[1], ts[2], { ...hp, step: 1 }, { state });
      const [gp, gm] = await readMany([ts[0], ts[1]]);
      expect(Array.from(gp)).toEqual(Array.from(p0));
      expect(gm.every((x) => x === 0)).toBe(true);
      adamwStep(ts[0], tg[1], ts[1], ts[2], { ...hp, step: 1 }, { state, skipNonFinite: false });
      const [gp2] = await readMany([ts[0]]);
      expect(gp2.some((x) => !Number.isFinite(x))).toBe(true);
    });
  }

  it('an update that would overflow is discarded whole: every tensor keeps its param, m and v', async () => {
    // two tensors; only one element of the second overflows (lr 1e38 · sign(g) = ±1e38 on top of 3e38)
    const sizes = [700, 33];
    const p0 = sizes.map((n, i) => rand(n, 20 + i)), g = sizes.map((n, i) => rand(n, 30 + i));
    p0[1][17] = 3e38;
    const tp = p0.map((x, i) => fromData(x, [sizes[i]])), tg = g.map((x, i) => fromData(x, [sizes[i]]));
    const tm = sizes.map((n) => fromData(new Float32Array(n).fill(0.01), [n])), tv = sizes.map((n) => fromData(new Float32Array(n).fill(0.02), [n]));
    const h = { ...hp, lr: 1e38, weightDecay: 0, step: 3 };
    const state = gradNorm(tg, 1);
    sizes.forEach((_, i) => adamwCheck(tp[i], tg[i], tm[i], tv[i], h, state));
    sizes.forEach((_, i) => adamwStep(tp[i], tg[i], tm[i], tv[i], h, { state }));
    const [s, ...got] = await readMany([state, ...tp, ...tm, ...tv]);
    expect(parseGradState(s)).toMatchObject({ nonFinite: false, updateNonFinite: true, vanished: false });
    expect(Buffer.from(got[0].buffer).equals(Buffer.from(p0[0].buffer))).toBe(true); // the sound tensor is untouched too
    expect(Buffer.from(got[1].buffer).equals(Buffer.from(p0[1].buffer))).toBe(true);
    for (const x of [got[2], got[3]]) expect(x.every((y) => y === Math.fround(0.01))).toBe(true);
    for (const x of [got[4], got[5]]) expect(x.every((y) => y === Math.fround(0.02))).toBe(true);
    // the same step at a sane learning rate is stored, and matches the reference
    const state2 = gradNorm(tg, 1);
    const h2 = { ...h, lr: 1e-3 };
    sizes.forEach((_, i) => adamwCheck(tp[i], tg[i], tm[i], tv[i], h2, state2));
    sizes.forEach((_, i) => adamwStep(tp[i], tg[i], tm[i], tv[i], h2, { state: state2 }));
    const [s2, q0] = await readMany([state2, tp[0]]);
    expect(parseGradState(s2).updateNonFinite).toBe(false);
    const ref = p0[0].slice(), rm = new Float32Array(sizes[0]).fill(0.01), rv = new Float32Array(sizes[0]).fill(0.02);
    adamwCpu(ref, g[0], rm, rv, h2, parseGradState(s2).clipScale);
    expectNear(q0, ref, 'param after a sound step');
  });

  it('all-zero gradients are flagged as vanished only when the loss had a gradient', async () => {
    const tg = [fromData(new Float32Array(300), [300]), fromData(new Float32Array(5), [5])];
    expect((await readGradState(gradNorm(tg, 1, { requireGrad: true }))).vanished).toBe(true);
    expect((await readGradState(gradNorm(tg, 1))).vanished).toBe(false);
    // tiny but non-zero gradients (their squares underflow f32 to 0) are not "vanished"
    const tiny = new Float32Array(5);
    tiny[3] = 1e-30;
    const st = await readGradState(gradNorm([tg[0], fromData(tiny, [5])], 1, { requireGrad: true }));
    expect(st).toMatchObject({ vanished: false, nonFinite: false });
    // gradients whose squares overflow f32 are flagged non-finite (torch's error_if_nonfinite), not clipped to 0
    const huge = await readGradState(gradNorm([fromData([3e20, 1], [2])], 1));
    expect(huge.nonFinite).toBe(true);
  });

  it('rejects mismatched moments by name', () => {
    const a = fromData(rand(4, 1), [4], 'f32', 'lora_A'), b = fromData(rand(3, 1), [3], 'f32', 'exp_avg');
    expect(() => adamwStep(a, a, b, a, { ...hp, step: 1 })).toThrow(/"exp_avg" \[3\].*"lora_A" \[4\]/);
    expect(() => adamwStep(a, a, a, a, { ...hp, step: 0 })).toThrow(/step must be >= 1/);
  });
});
