import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, memory, packBf16, readMany, unpackBf16, type Tensor } from '../gpu/tensor.ts';
import { lmHeadLogSoftmax, lmHeadLogSoftmaxBackward, type LmHeadShard } from './lmHead.ts';
import { lmHeadBackwardCpu, lmHeadCpu } from './cpu/lmHead.ts';
import { matmul, matmulBackwardInput } from './matmul.ts';
import { lsgBackwardChunk, lsgBegin, lsgChunk, lsgFinish } from './softmaxGather.ts';
import { expectClose, rand } from './testUtil.ts';

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

/** W [V, H] cut into shards of `rows` rows (the last one shorter), f32 or bf16 (values rounded for the CPU too). */
function shardsOf(w: Float32Array, V: number, H: number, rows: number, dtype: 'f32' | 'bf16'): { shards: LmHeadShard[]; w: Float32Array } {
  const wr = dtype === 'bf16' ? unpackBf16(packBf16(w), w.length) : w;
  const shards: LmHeadShard[] = [];
  for (let v0 = 0; v0 < V; v0 += rows) {
    const n = Math.min(rows, V - v0);
    shards.push({ t: fromData(wr.slice(v0 * H, (v0 + n) * H), [n, H], dtype, `w[${v0}]`), v0 });
  }
  return { shards, w: wr };
}

function targetsOf(T: number, V: number, seed: number): Int32Array {
  return Int32Array.from(rand(T, seed), (u, i) => (i % 5 === 3 ? -100 : Math.min(V - 1, Math.floor(((u + 1) / 2) * V))));
}

const release = (ts: Tensor[]) => ts.forEach((t) => t.release());

describe('fused lm_head + log-softmax gather', () => {
  // odd sizes: T not a multiple of 16 (rows per workgroup) or 4, V not a multiple of 64 or of the
  // split, several shards (the last one short), H odd (scalar path) and H % 4 == 0 (vec4 path)
  const cases = [
    { T: 19, H: 13, V: 301, rows: 128, split: 64, dtype: 'f32' as const, scale: 1 },
    { T: 7, H: 20, V: 517, rows: 200, split: 128, dtype: 'bf16' as const, scale: 1 / 0.7 },
    { T: 33, H: 9, V: 130, rows: 130, dtype: 'bf16' as const, scale: 1 },
    { T: 5, H: 36, V: 1000, rows: 334, split: 192, dtype: 'f32' as const, scale: 2 },
  ];
  for (const c of cases) {
    it(`GPU = CPU: T ${c.T}, H ${c.H}, V ${c.V} in shards of ${c.rows}, ${c.dtype}, scale ${c.scale.toFixed(3)}`, async () => {
      const { T, H, V } = c;
      const xs = rand(T * H, 1 + T, 1), { shards, w } = shardsOf(rand(V * H, 2 + V, 0.5), V, H, c.rows, c.dtype);
      const tg = targetsOf(T, V, 3);
      const dl = Float32Array.from(rand(T, 4), (u, i) => (i % 7 === 2 ? 0 : u));
      const x = fromData(xs, [T, H]), targets = fromData(tg, [T], 'i32'), dlogp = fromData(dl, [T]);
      const opts = { scale: c.scale, split: c.split };
      const r = lmHeadLogSoftmax(x, shards, targets, opts);
      const dx = lmHeadLogSoftmaxBackward(x, shards, targets, r.lse, dlogp, opts);
      const [logp, lse, am, dxg] = await readMany([r.logp, r.lse, r.argmax, dx]);
      const ref = lmHeadCpu(xs, w, tg, T, H, V, c.scale);
      expectClose(logp, ref.logp, 'logp');
      expectClose(lse, ref.lse, 'lse');
      expect(Array.from(am as Int32Array)).toEqual(Array.from(ref.argmax));
      for (let i = 0; i < T; i++) if (tg[i] < 0) expect(logp[i]).toBe(0);
      const dref = lmHeadBackwardCpu(xs, w, tg, dl, T, H, V, c.scale);
      expectClose(dxg, dref, 'dx');
      // the training forward's expected embedding (H % 4 == 0): the same statistics, and dx without recomputation
      const re = lmHeadLogSoftmax(x, shards, targets, { ...opts, expected: true });
      expect(!!re.expected).toBe(H % 4 === 0);
      if (re.expected) {
        const dxe = lmHeadLogSoftmaxBackward(x, shards, targets, re.lse, dlogp, { ...opts, fromExpected: re.expected });
        const [lpe, ame, dxeg] = await readMany([re.logp, re.argmax, dxe]);
        expectClose(lpe, ref.logp, 'logp (with expected)');
        expect(Array.from(ame as Int32Array)).toEqual(Array.from(ref.argmax));
        expectClose(dxeg, dref, 'dx from expected');
        release([dxe, re.expected]);
      }
      release([x, targets, dlogp, r.logp, r.lse, r.argmax, dx, re.logp, re.lse, re.argmax, ...shards.map((s) => s.t)]);
    });
  }

  it('equals the chunked matmul + softmaxGather path; accumulates into out', async () => {
    const T = 11, H = 24, V = 700, rows = 256;
    const xs = rand(T * H, 5, 1), { shards } = shardsOf(rand(V * H, 6, 0.4), V, H, rows, 'bf16');
    // the old path has no notion of ignored rows in its backward: their dlogp is 0 there
    const tg = targetsOf(T, V, 7), dl = Float32Array.from(rand(T, 8), (u, i) => (tg[i] < 0 ? 0 : u));
    const x = fromData(xs, [T, H]), targets = fromData(tg, [T], 'i32'), dlogp = fromData(dl, [T]);
    // today's path: logits chunk per shard, folded; backward per chunk
    const st = lsgBegin(targets);
    const chunks = shards.map((s) => { const lg = matmul(x, s.t); lsgChunk(st, lg, s.v0); return lg; });
    const old = lsgFinish(st);
    const dxOld = fromData(new Float32Array(T * H).fill(0.25), [T, H]);
    shards.forEach((s, i) => {
      const d = lsgBackwardChunk(chunks[i], targets, old.lse, dlogp, s.v0);
      matmulBackwardInput(d, s.t, { out: dxOld, accumulate: true });
      d.release();
    });
    const r = lmHeadLogSoftmax(x, shards, targets);
    const dxNew = fromData(new Float32Array(T * H).fill(0.25), [T, H]);
    lmHeadLogSoftmaxBackward(x, shards, targets, r.lse, dlogp, { out: dxNew, accumulate: true });
    const [a, b, c, d, e, f] = await readMany([old.logp, r.logp, old.argmax, r.argmax, dxOld, dxNew]);
    expectClose(b, a, 'logp vs chunked');
    expect(Array.from(d as Int32Array)).toEqual(Array.from(c as Int32Array));
    expectClose(f, e, 'dx vs chunked');
    release([x, targets, dlogp, old.logp, old.lse, old.argmax, r.logp, r.lse, r.argmax, dxOld, dxNew, ...chunks, ...shards.map((s) => s.t)]);
  });

  it('backward matches finite differences of the forward (f32 W, scale 1.3)', async () => {
    const T = 3, H = 7, V = 150, scale = 1.3;
    const xs = rand(T * H, 9, 1), { shards } = shardsOf(rand(V * H, 10, 0.8), V, H, 64, 'f32');
    const tg = Int32Array.of(4, 149, 77), dl = Float32Array.of(0.7, -1.1, 0.4);
    const targets = fromData(tg, [T], 'i32'), dlogp = fromData(dl, [T]);
    // objective f(x) = Σ_r dl[r]·logp[r]; its gradient is dx
    const f = async (xv: Float32Array) => {
      const x = fromData(xv, [T, H]);
      const r = lmHeadLogSoftmax(x, shards, targets, { scale, split: 64 });
      const [lp] = await readMany([r.logp]);
      release([x, r.logp, r.lse, r.argmax]);
      return Array.from(lp).reduce((a, v, i) => a + dl[i] * v, 0);
    };
    const x = fromData(xs, [T, H]);
    const r = lmHeadLogSoftmax(x, shards, targets, { scale, split: 64 });
    const dx = lmHeadLogSoftmaxBackward(x, shards, targets, r.lse, dlogp, { scale, split: 64 });
    const [g] = await readMany([dx]);
    expect(H % 4).not.toBe(0); // the recomputing backward; the expected path is checked against it below
    const eps = 1e-2;
    for (const i of [0, 5, 8, 13, 20]) {
      const p = xs.slice(), m = xs.slice();
      p[i] += eps;
      m[i] -= eps;
      const fd = ((await f(p)) - (await f(m))) / (2 * eps);
      expect(Math.abs(fd - g[i]), `dx[${i}]: fd ${fd} vs ${g[i]}`).toBeLessThan(2e-3 + 2e-2 * Math.abs(fd));
    }
    release([x, targets, dlogp, r.logp, r.lse, r.argmax, dx, ...shards.map((s) => s.t)]);
  });

  it('never holds [T, V] logits: forward and backward stay far below T·V floats', async () => {
    const T = 16, H = 8, V = 60000;
    const { shards } = shardsOf(rand(V * H, 12, 0.3), V, H, 16384, 'bf16');
    const x = fromData(rand(T * H, 13, 1), [T, H]), targets = fromData(targetsOf(T, V, 14), [T], 'i32'), dlogp = fromData(rand(T, 15), [T]);
    await readMany([x]);
    // peak counts live + pooled bytes: it rises only when a new buffer is created
    const base = memory.live + memory.pooled;
    memory.peak = base;
    for (const expected of [false, true]) {
      const r = lmHeadLogSoftmax(x, shards, targets, { expected });
      const dx = lmHeadLogSoftmaxBackward(x, shards, targets, r.lse, dlogp, { fromExpected: r.expected });
      await readMany([dx]);
      release([r.logp, r.lse, r.argmax, dx, ...(r.expected ? [r.expected] : [])]);
    }
    // logits alone would be T·V·4 = 3.84 MB; partial statistics, partial E / dx and the outputs are ~1% of it
    expect(memory.peak - base).toBeLessThan((T * V * 4) / 20);
    release([x, targets, dlogp, ...shards.map((s) => s.t)]);
  });

  it('reports every bad argument at once', () => {
    const x = fromData(rand(6, 1), [2, 3]), t = fromData(Int32Array.of(1, 2, 3), [3], 'i32');
    const w1 = fromData(rand(12, 2), [3, 4]);
    expect(() => lmHeadLogSoftmax(x, [{ t: w1, v0: 0 }], t)).toThrow(/targets "tensor" must be i32 \[2\].*shard 0 .* must be \[rows, 3\]/);
    release([x, t, w1]);
  });
});
