import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, readMany, type Tensor } from '../gpu/tensor.ts';
import { attentionCausal, attentionCausalBackward, attentionVarlen, attentionVarlenBackward, attentionVariant, setAttentionVariant, tuneAttention, type AttentionVariant } from './attention.ts';
import { attentionBackwardCpu, attentionCpu, causalRange, varlenRange, type AttnShape, type KeyRange } from './cpu/attention.ts';
import { TOL } from '../parity/golden.ts';

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

let seed = 1;
function rnd(n: number, a = 1): Float32Array {
  return Float32Array.from({ length: n }, () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return (seed / 2 ** 31 * 2 - 1) * a;
  });
}

function close(name: string, got: ArrayLike<number>, exp: ArrayLike<number>, tol: { atol: number; rtol: number } = TOL.kernel): void {
  expect(got.length, name).toBe(exp.length);
  let err = 0, scale = 0;
  for (let i = 0; i < exp.length; i++) {
    const d = Math.abs(got[i] - exp[i]);
    err = Number.isNaN(d) ? Infinity : Math.max(err, d);
    scale = Math.max(scale, Math.abs(exp[i]));
  }
  expect(err, `${name}: max err ${err} (scale ${scale})`).toBeLessThanOrEqual(tol.atol + tol.rtol * scale);
}

function up(...xs: [Float32Array, number[]][]): Tensor[] {
  return xs.map(([x, s]) => fromData(x, s));
}

interface Case { lq: number; lk: number; cap?: number; hq: number; hkv: number; d: number }

// Every GPU test below runs once per kernel variant (forced by setAttentionVariant).
const VARIANTS: AttentionVariant[] = ['naive', 'flash'];

async function checkCausal(c: Case, backward = true): Promise<void> {
  const { lq, lk, hq, hkv, d } = c;
  const cap = c.cap ?? lk;
  const s: AttnShape = { lq, lk, hq, hkv, d, scale: 1 / Math.sqrt(d) };
  const q = rnd(lq * hq * d, 2), dy = rnd(lq * hq * d);
  // cache rows past kvLen hold huge values: reading any of them would show
  const k = new Float32Array(cap * hkv * d).fill(1e4), v = new Float32Array(cap * hkv * d).fill(1e4);
  k.set(rnd(lk * hkv * d, 2));
  v.set(rnd(lk * hkv * d));
  const [tq, tk, tv, tdy] = up([q, [lq, hq, d]], [k, [cap, hkv, d]], [v, [cap, hkv, d]], [dy, [lq, hq, d]]);
  const range = causalRange(lq, lk);
  const f = attentionCausal(tq, tk, tv, { kvLen: lk });
  const ref = attentionCpu(q, k, v, s, range);
  const ts: Tensor[] = [f.out, f.lse];
  let g: ReturnType<typeof attentionCausalBackward> | undefined;
  if (backward) {
    g = attentionCausalBackward(tq, tk, tv, f.out, f.lse, tdy, { kvLen: lk });
    ts.push(g.dq, g.dk, g.dv);
  }
  const got = await readMany(ts);
  const tag = `${attentionVariant().fwd} ${JSON.stringify(c)}`;
  close(`out ${tag}`, got[0], ref.out);
  close(`lse ${tag}`, got[1], ref.lse);
  if (g) {
    expect(g.dk.shape).toEqual([lk, hkv, d]);
    const rb = attentionBackwardCpu(q, k, v, dy, s, range);
    close(`dq ${tag}`, got[2], rb.dq);
    close(`dk ${tag}`, got[3], rb.dk);
    close(`dv ${tag}`, got[4], rb.dv);
  }
  for (const t of [tq, tk, tv, tdy, ...ts]) t.release();
}

async function checkVarlen(n: number, hq: number, hkv: number, d: number, cu: number[], causal = false): Promise<void> {
  // flash keeps dS in a scratch when told the longest segment, and recomputes it otherwise
  const longest = Math.max(0, ...cu.slice(1).map((c, i) => c - cu[i]));
  await checkVarlenOnce(n, hq, hkv, d, cu, causal, undefined);
  await checkVarlenOnce(n, hq, hkv, d, cu, causal, longest);
}

async function checkVarlenOnce(n: number, hq: number, hkv: number, d: number, cu: number[], causal: boolean, maxSeqlen: number | undefined): Promise<void> {
  const s: AttnShape = { lq: n, lk: n, hq, hkv, d, scale: 1 / Math.sqrt(d) };
  const q = rnd(n * hq * d, 2), k = rnd(n * hkv * d, 2), v = rnd(n * hkv * d), dy = rnd(n * hq * d);
  const [tq, tk, tv, tdy] = up([q, [n, hq, d]], [k, [n, hkv, d]], [v, [n, hkv, d]], [dy, [n, hq, d]]);
  const tcu = fromData(Int32Array.from(cu), [cu.length]);
  const f = attentionVarlen(tq, tk, tv, tcu, { causal, maxSeqlen });
  const g = attentionVarlenBackward(tq, tk, tv, f.out, f.lse, tdy, tcu, { causal, maxSeqlen });
  const got = await readMany([f.out, f.lse, g.dq, g.dk, g.dv]);
  const range: KeyRange = varlenRange(cu, causal);
  const ref = attentionCpu(q, k, v, s, range);
  const rb = attentionBackwardCpu(q, k, v, dy, s, range);
  const tag = `${attentionVariant().fwd} varlen n=${n} ${hq}/${hkv} d=${d} cu=${cu} causal=${causal} maxSeqlen=${maxSeqlen}`;
  close(`out ${tag}`, got[0], ref.out);
  close(`lse ${tag}`, got[1], ref.lse);
  close(`dq ${tag}`, got[2], rb.dq);
  close(`dk ${tag}`, got[3], rb.dk);
  close(`dv ${tag}`, got[4], rb.dv);
  for (const t of [tq, tk, tv, tdy, tcu, f.out, f.lse, g.dq, g.dk, g.dv]) t.release();
}

describe('attention CPU reference', () => {
  it('backward matches finite differences (causal GQA with q offset, varlen)', () => {
    const cases: [AttnShape, KeyRange][] = [
      [{ lq: 3, lk: 5, hq: 4, hkv: 2, d: 3, scale: 0.7 }, causalRange(3, 5)],
      [{ lq: 6, lk: 6, hq: 2, hkv: 2, d: 4, scale: 0.5 }, varlenRange([0, 2, 6])],
      [{ lq: 6, lk: 6, hq: 3, hkv: 1, d: 2, scale: 0.9 }, varlenRange([0, 4, 6], true)],
    ];
    for (const [s, range] of cases) {
      const q = rnd(s.lq * s.hq * s.d), k = rnd(s.lk * s.hkv * s.d), v = rnd(s.lk * s.hkv * s.d), dy = rnd(s.lq * s.hq * s.d);
      const f = (qq: Float32Array, kk: Float32Array, vv: Float32Array) => attentionCpu(qq, kk, vv, s, range).out.reduce((a, o, i) => a + o * dy[i], 0);
      const g = attentionBackwardCpu(q, k, v, dy, s, range);
      const eps = 1e-2;
      for (const [name, x, dx] of [['q', q, g.dq], ['k', k, g.dk], ['v', v, g.dv]] as const) {
        for (let i = 0; i < x.length; i++) {
          const x0 = x[i];
          x[i] = x0 + eps; const fp = f(q, k, v);
          x[i] = x0 - eps; const fm = f(q, k, v);
          x[i] = x0;
          expect(Math.abs((fp - fm) / (2 * eps) - dx[i]), `d${name}[${i}]`).toBeLessThan(2e-3);
        }
      }
    }
  });
});

for (const variant of VARIANTS) describe(`attention ${variant}`, () => {
beforeAll(() => setAttentionVariant(variant));
afterAll(() => setAttentionVariant('auto'));

describe('attention causal GQA (GPU vs CPU)', () => {
  it('prefill, odd lengths and head dims', async () => {
    for (const c of [
      { lq: 1, lk: 1, hq: 4, hkv: 2, d: 16 },
      { lq: 13, lk: 13, hq: 6, hkv: 2, d: 80 },
      { lq: 37, lk: 37, hq: 2, hkv: 2, d: 20 },
      { lq: 65, lk: 65, hq: 4, hkv: 2, d: 16 },
      { lq: 19, lk: 19, hq: 16, hkv: 2, d: 128 },
      { lq: 11, lk: 11, hq: 3, hkv: 1, d: 13 }, // scalar (non-vec4) variant
    ]) await checkCausal(c);
  });

  it('queries at an offset (KV-cache decoding), cache capacity > kvLen', async () => {
    for (const c of [
      { lq: 1, lk: 37, cap: 50, hq: 16, hkv: 2, d: 128 },
      { lq: 5, lk: 22, cap: 40, hq: 6, hkv: 2, d: 80 },
      { lq: 3, lk: 20, hq: 4, hkv: 1, d: 16 },
    ]) await checkCausal(c);
  });

  it('head dim above 128 (256-wide variant), forward only', async () => {
    await checkCausal({ lq: 9, lk: 9, hq: 2, hkv: 1, d: 200 }, false);
  });

  it('large scores stay finite (stable softmax)', async () => {
    const lq = 7, hq = 2, d = 8;
    const q = rnd(lq * hq * d, 60), k = rnd(lq * hq * d, 60), v = rnd(lq * hq * d);
    const [tq, tk, tv] = up([q, [lq, hq, d]], [k, [lq, hq, d]], [v, [lq, hq, d]]);
    const f = attentionCausal(tq, tk, tv, { scale: 1 });
    const [o] = await readMany([f.out]);
    const ref = attentionCpu(q, k, v, { lq, lk: lq, hq, hkv: hq, d, scale: 1 }, causalRange(lq, lq));
    close('out', o, ref.out);
  });

  it('backward is deterministic', async () => {
    const lq = 21, hq = 4, hkv = 2, d = 16;
    const [tq, tk, tv, tdy] = up([rnd(lq * hq * d), [lq, hq, d]], [rnd(lq * hkv * d), [lq, hkv, d]], [rnd(lq * hkv * d), [lq, hkv, d]], [rnd(lq * hq * d), [lq, hq, d]]);
    const f = attentionCausal(tq, tk, tv);
    const a = attentionCausalBackward(tq, tk, tv, f.out, f.lse, tdy);
    const b = attentionCausalBackward(tq, tk, tv, f.out, f.lse, tdy);
    const r = await readMany([a.dq, a.dk, a.dv, b.dq, b.dk, b.dv]);
    for (let i = 0; i < 3; i++) expect(Array.from(r[i + 3])).toEqual(Array.from(r[i]));
  });

  it('inputs may alias (q = k = v, dy = out): backward inputs bind read-only', async () => {
    const n = 9, h = 2, d = 16, x = rnd(n * h * d);
    const t = fromData(x, [n, h, d]);
    const f = attentionCausal(t, t, t);
    const g = attentionCausalBackward(t, t, t, f.out, f.lse, f.out);
    const [out, dq, dk, dv] = await readMany([f.out, g.dq, g.dk, g.dv]);
    const s: AttnShape = { lq: n, lk: n, hq: h, hkv: h, d, scale: 0.25 };
    const ref = attentionCpu(x, x, x, s, causalRange(n, n));
    const rb = attentionBackwardCpu(x, x, x, ref.out, s, causalRange(n, n));
    close('out', out, ref.out);
    close('dq', dq, rb.dq);
    close('dk', dk, rb.dk);
    close('dv', dv, rb.dv);
    for (const z of [t, f.out, f.lse, g.dq, g.dk, g.dv]) z.release();
  });

  it('rejects bad shapes with names and sizes', () => {
    const q = fromData(new Float32Array(2 * 3 * 4), [2, 3, 4], 'f32', 'q_proj.out');
    const k = fromData(new Float32Array(2 * 2 * 4), [2, 2, 4], 'f32', 'k_proj.out');
    const v = fromData(new Float32Array(2 * 2 * 4), [2, 2, 4], 'f32', 'v_proj.out');
    expect(() => attentionCausal(q, k, v)).toThrow(/query heads 3.*q_proj\.out.*kv heads 2/);
    expect(() => attentionCausal(k, k, v, { kvLen: 3 })).toThrow(/kvLen 3 exceeds the 2 rows/);
    expect(() => attentionCausal(k, k, v, { qOffset: 1 })).toThrow(/qOffset 1/);
    const big = fromData(new Float32Array(300), [1, 1, 300], 'f32', 'wide');
    expect(() => attentionCausal(big, big, big)).toThrow(/head dim 300/);
    for (const t of [q, k, v, big]) t.release();
  });
});

describe('attention varlen (GPU vs CPU)', () => {
  it('uneven segments, empty segment, vision head dims', async () => {
    await checkVarlen(40, 3, 3, 80, [0, 5, 6, 23, 23, 40]);
    await checkVarlen(13, 2, 2, 16, [0, 13]);
    await checkVarlen(70, 2, 2, 32, [0, 64, 70]);
  });

  it('rows past the last segment get zeros; GQA and causal segments', async () => {
    await checkVarlen(17, 4, 2, 16, [0, 7, 12]);
    await checkVarlen(20, 4, 2, 24, [0, 9, 20], true);
    await checkVarlen(15, 2, 1, 6, [0, 4, 15], false); // scalar variant, GQA grouping
  });
});
});

describe('attention variants together', () => {
  it('flash backward, head dim above 128 (tiles of 4 rows)', async () => {
    setAttentionVariant('flash');
    try {
      await checkCausal({ lq: 9, lk: 9, hq: 2, hkv: 1, d: 200 });
      await checkVarlenOnce(10, 2, 2, 164, [0, 3, 10], false, 7);
    } finally {
      setAttentionVariant('auto');
    }
  });

  it('a forward of one variant and a backward of the other agree (same logsumexp contract)', async () => {
    const lq = 11, lk = 14, hq = 4, hkv = 2, d = 12;
    const s: AttnShape = { lq, lk, hq, hkv, d, scale: 1 / Math.sqrt(d) };
    const q = rnd(lq * hq * d), k = rnd(lk * hkv * d), v = rnd(lk * hkv * d), dy = rnd(lq * hq * d);
    const [tq, tk, tv, tdy] = up([q, [lq, hq, d]], [k, [lk, hkv, d]], [v, [lk, hkv, d]], [dy, [lq, hq, d]]);
    const rb = attentionBackwardCpu(q, k, v, dy, s, causalRange(lq, lk));
    for (const [fv, bv] of [['naive', 'flash'], ['flash', 'naive']] as const) {
      const f = attentionCausal(tq, tk, tv, { variant: fv });
      const g = attentionCausalBackward(tq, tk, tv, f.out, f.lse, tdy, { variant: bv });
      const [dq, dk, dv] = await readMany([g.dq, g.dk, g.dv]);
      close(`dq ${fv}->${bv}`, dq, rb.dq);
      close(`dk ${fv}->${bv}`, dk, rb.dk);
      close(`dv ${fv}->${bv}`, dv, rb.dv);
      for (const t of [f.out, f.lse, g.dq, g.dk, g.dv]) t.release();
    }
    for (const t of [tq, tk, tv, tdy]) t.release();
  });

  it('flash backward matches finite differences of the forward (odd head dim, KV offset, GQA 3)', async () => {
    const lq = 3, lk = 6, hq = 3, hkv = 1, d = 5;
    const s: AttnShape = { lq, lk, hq, hkv, d, scale: 0.6 };
    const range = causalRange(lq, lk);
    const q = rnd(lq * hq * d), k = rnd(lk * hkv * d), v = rnd(lk * hkv * d), dy = rnd(lq * hq * d);
    const [tq, tk, tv, tdy] = up([q, [lq, hq, d]], [k, [lk, hkv, d]], [v, [lk, hkv, d]], [dy, [lq, hq, d]]);
    const f = attentionCausal(tq, tk, tv, { scale: s.scale, variant: 'flash' });
    const g = attentionCausalBackward(tq, tk, tv, f.out, f.lse, tdy, { scale: s.scale, variant: 'flash' });
    const [dq, dk, dv] = await readMany([g.dq, g.dk, g.dv]);
    // L = Σ out·dy in f64 on the CPU reference forward
    const loss = () => attentionCpu(q, k, v, s, range).out.reduce((a, o, i) => a + o * dy[i], 0);
    const eps = 1e-2;
    for (const [name, x, dx] of [['q', q, dq], ['k', k, dk], ['v', v, dv]] as const) {
      for (let i = 0; i < x.length; i++) {
        const x0 = x[i];
        x[i] = x0 + eps; const fp = loss();
        x[i] = x0 - eps; const fm = loss();
        x[i] = x0;
        expect(Math.abs((fp - fm) / (2 * eps) - dx[i]), `d${name}[${i}]`).toBeLessThan(2e-3);
      }
    }
    for (const t of [tq, tk, tv, tdy, f.out, f.lse, g.dq, g.dk, g.dv]) t.release();
  });

  it('tuneAttention picks a variant per direction and attentionVariant() follows it; a forced one wins', async () => {
    const t = await tuneAttention({ t: 12, hq: 2, hkv: 1, d: 8, reps: 1, force: true });
    for (const v of ['naive', 'flash'] as const) expect(t.ms[v].fwd).toBeGreaterThan(0);
    expect(attentionVariant()).toEqual(t.choice);
    setAttentionVariant('naive');
    expect(attentionVariant()).toEqual({ fwd: 'naive', bwd: 'naive' });
    setAttentionVariant('auto');
    expect(attentionVariant()).toEqual(t.choice);
  });
});
