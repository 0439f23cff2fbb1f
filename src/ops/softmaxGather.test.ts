import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, read, readMany, type Tensor } from '../gpu/tensor.ts';
import {
  ceDlogp, ceFinish, crossEntropyMasked, crossEntropyMaskedBackward, logSoftmaxGather, logSoftmaxGatherBackward,
  lsgBackwardChunk, lsgBegin, lsgChunk, lsgFinish,
} from './softmaxGather.ts';
import { crossEntropyMaskedCpu, logSoftmaxGatherBackwardCpu, logSoftmaxGatherCpu } from './cpu/softmaxGather.ts';
import { TOL } from '../parity/golden.ts';

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

let seed = 7;
function rnd(n: number, a = 1): Float32Array {
  return Float32Array.from({ length: n }, () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return (seed / 2 ** 31 * 2 - 1) * a;
  });
}
function ids(n: number, v: number): Int32Array {
  return Int32Array.from(rnd(n), (x) => Math.min(v - 1, Math.floor((x + 1) / 2 * v)));
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

/** columns [c0, c1) of a [t, v] row-major array */
function cols(x: Float32Array, t: number, v: number, c0: number, c1: number): Float32Array {
  const out = new Float32Array(t * (c1 - c0));
  for (let r = 0; r < t; r++) out.set(x.subarray(r * v + c0, r * v + c1), r * (c1 - c0));
  return out;
}

describe('log-softmax gather CPU reference', () => {
  it('backward matches finite differences', () => {
    const t = 3, v = 7;
    const x = rnd(t * v, 3), tg = Int32Array.from([2, 0, 6]), dlogp = rnd(t);
    const f = () => logSoftmaxGatherCpu(x, tg, t, v).logp.reduce((a, l, i) => a + l * dlogp[i], 0);
    const g = logSoftmaxGatherBackwardCpu(x, tg, dlogp, t, v);
    const eps = 1e-2;
    for (let i = 0; i < x.length; i++) {
      const x0 = x[i];
      x[i] = x0 + eps; const fp = f();
      x[i] = x0 - eps; const fm = f();
      x[i] = x0;
      expect(Math.abs((fp - fm) / (2 * eps) - g[i]), `dlogits[${i}]`).toBeLessThan(1e-3);
    }
  });
});

describe('log-softmax gather (GPU vs CPU)', () => {
  it('whole logits, odd sizes, large magnitudes', async () => {
    for (const [t, v, a] of [[1, 1000, 5], [7, 257, 40], [13, 3001, 10], [70, 65, 1]]) {
      const x = rnd(t * v, a), tg = ids(t, v), dlogp = rnd(t);
      const tx = fromData(x, [t, v]), tt = fromData(tg, [t]), td = fromData(dlogp, [t]);
      const r = logSoftmaxGather(tx, tt);
      const dl = logSoftmaxGatherBackward(tx, tt, r.lse, td);
      const [logp, lse, am, dlg] = await readMany([r.logp, r.lse, r.argmax, dl]);
      const ref = logSoftmaxGatherCpu(x, tg, t, v);
      close(`logp ${t}x${v}`, logp, ref.logp);
      close(`lse ${t}x${v}`, lse, ref.lse);
      expect(Array.from(am)).toEqual(Array.from(ref.argmax));
      close(`dlogits ${t}x${v}`, dlg, logSoftmaxGatherBackwardCpu(x, tg, dlogp, t, v));
      for (const z of [tx, tt, td, r.logp, r.lse, r.argmax, dl]) z.release();
    }
  });

  it('chunked over the vocabulary equals unchunked (separate chunk tensors and column slices)', async () => {
    const t = 11, v = 1031, bounds = [0, 300, 301, 700, 1031];
    const x = rnd(t * v, 8), tg = ids(t, v), dlogp = rnd(t);
    tg[0] = 300; // a target alone in a 1-wide chunk
    tg[1] = 0;
    tg[2] = 1030;
    // a tie for the maximum across chunks: the first index wins
    x[3 * v + 100] = 50; x[3 * v + 800] = 50;
    const tx = fromData(x, [t, v]), tt = fromData(tg, [t]), td = fromData(dlogp, [t]);
    const whole = logSoftmaxGather(tx, tt);
    const dWhole = logSoftmaxGatherBackward(tx, tt, whole.lse, td);

    const chunks: Tensor[] = [];
    const st = lsgBegin(tt);
    for (let i = 0; i + 1 < bounds.length; i++) {
      const c = fromData(cols(x, t, v, bounds[i], bounds[i + 1]), [t, bounds[i + 1] - bounds[i]]);
      chunks.push(c);
      lsgChunk(st, c, bounds[i]);
    }
    const ch = lsgFinish(st);
    const dChunks = chunks.map((c, i) => lsgBackwardChunk(c, tt, ch.lse, td, bounds[i]));

    // the same through column slices of the whole tensor, in reverse order
    const st2 = lsgBegin(tt);
    for (let i = bounds.length - 2; i >= 0; i--) lsgChunk(st2, { t: tx, col0: bounds[i], vc: bounds[i + 1] - bounds[i] }, bounds[i]);
    const sl = lsgFinish(st2);
    const dSlice = lsgBackwardChunk({ t: tx, col0: 300, vc: 401 }, tt, sl.lse, td, 300);

    const [wl, wlse, wam, wd, cl, clse, cam, sll, slam, dsl, ...dc] = await readMany([
      whole.logp, whole.lse, whole.argmax, dWhole, ch.logp, ch.lse, ch.argmax, sl.logp, sl.argmax, dSlice, ...dChunks,
    ]);
    const tol = { atol: 1e-6, rtol: 1e-6 };
    close('chunked logp', cl, wl, tol);
    close('chunked lse', clse, wlse, tol);
    close('sliced logp', sll, wl, tol);
    expect(Array.from(cam)).toEqual(Array.from(wam));
    expect(Array.from(slam)).toEqual(Array.from(wam));
    expect(wam[3]).toBe(100);
    const wdf = wd as Float32Array;
    for (let i = 0; i < dc.length; i++) close(`dlogits chunk ${i}`, dc[i], cols(wdf, t, v, bounds[i], bounds[i + 1]), tol);
    close('dlogits slice', dsl, cols(wdf, t, v, 300, 701), tol);
    close('vs CPU', cl, logSoftmaxGatherCpu(x, tg, t, v).logp);
    expect(st.chunks).toBe(4);
    expect(st.vocab).toBe(v);
  });

  it('rejects mismatched shapes with names', () => {
    const x = fromData(new Float32Array(12), [3, 4], 'f32', 'lm_head.out');
    const tg = fromData(Int32Array.from([1, 2]), [2], 'i32', 'labels');
    expect(() => logSoftmaxGather(x, tg)).toThrow(/lm_head\.out.*3 rows.*2/);
    expect(() => lsgChunk(lsgBegin(fromData(Int32Array.from([0, 1, 2]), [3])), { t: x, col0: 2, vc: 3 }, 0)).toThrow(/columns \[2, 5\)/);
    expect(() => lsgFinish(lsgBegin(tg))).toThrow(/before any lsgChunk/);
  });
});

describe('masked cross-entropy (GPU vs CPU)', () => {
  it('ignores -100 rows, counts kept and correct rows on the GPU', async () => {
    for (const [t, v] of [[9, 257], [1, 50], [40, 1000]]) {
      const x = rnd(t * v, 6), tg = ids(t, v);
      for (let r = 0; r < t; r += 3) tg[r] = -100;
      if (t > 2) tg[t - 1] = (() => { let m = 0; for (let c = 1; c < v; c++) if (x[(t - 1) * v + c] > x[(t - 1) * v + m]) m = c; return m; })(); // one correct
      const tx = fromData(x, [t, v]), tt = fromData(tg, [t]);
      const r = crossEntropyMasked(tx, tt);
      const dl = crossEntropyMaskedBackward(tx, tt, r);
      const [loss, stats, dlg, logp] = await readMany([r.loss, r.stats, dl, r.logp]);
      const ref = crossEntropyMaskedCpu(x, tg, t, v);
      close(`loss ${t}x${v}`, loss, [ref.loss]);
      expect(stats[1]).toBe(ref.numKept);
      expect(stats[2]).toBe(ref.numCorrect);
      close(`dlogits ${t}x${v}`, dlg, ref.dlogits);
      close(`logp ${t}x${v}`, logp, ref.logp);
      for (const z of [tx, tt, r.loss, r.stats, r.logp, r.lse, r.argmax, dl]) z.release();
    }
  });

  it('chunked cross-entropy with dloss scaling; all rows ignored gives zeros, not NaN', async () => {
    const t = 6, v = 500;
    const x = rnd(t * v, 4), tg = Int32Array.from([3, -100, 499, 250, -100, 0]);
    const tx = fromData(x, [t, v]), tt = fromData(tg, [t]);
    const st = lsgBegin(tt);
    lsgChunk(st, { t: tx, col0: 0, vc: 250 }, 0);
    lsgChunk(st, { t: tx, col0: 250, vc: 250 }, 250);
    const r = ceFinish(st);
    const dlogp = ceDlogp(tt, r.stats, 0.5);
    const d0 = lsgBackwardChunk({ t: tx, col0: 0, vc: 250 }, tt, r.lse, dlogp, 0);
    const d1 = lsgBackwardChunk({ t: tx, col0: 250, vc: 250 }, tt, r.lse, dlogp, 250);
    const [loss, a, b] = await readMany([r.loss, d0, d1]);
    const ref = crossEntropyMaskedCpu(x, tg, t, v);
    close('loss', loss, [ref.loss]);
    close('dlogits[:, :250]', a, cols(ref.dlogits.map((z) => z * 0.5), t, v, 0, 250));
    close('dlogits[:, 250:]', b, cols(ref.dlogits.map((z) => z * 0.5), t, v, 250, 500));

    const none = fromData(new Int32Array(t).fill(-100), [t]);
    const rn = crossEntropyMasked(tx, none);
    const dn = crossEntropyMaskedBackward(tx, none, rn);
    const [ln, sn, dd] = await readMany([rn.loss, rn.stats, dn]);
    expect(ln[0]).toBe(0);
    expect(sn[1]).toBe(0);
    expect(dd.every((z) => z === 0)).toBe(true);
    expect(Array.from(await read(rn.logp))).toEqual(new Array(t).fill(0));
  });
});
