import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, packBf16, readMany, unpackBf16 } from '../gpu/tensor.ts';
import { embedding, embeddingBackward, embeddingBackwardAccumulate } from './embedding.ts';
import { embeddingBackwardCpu, embeddingCpu } from './cpu/embedding.ts';
import { rand, expectClose } from './testUtil.ts';

/** T ids in [0, V) with many repeats, plus two out-of-range ids */
function makeIds(T: number, V: number): Int32Array {
  const r = rand(T, 99 + T);
  const ids = Int32Array.from(r, (v) => Math.floor(((v + 1) / 2) * Math.min(V, 9)) * 3 % V);
  ids[1] = -1;
  ids[T - 2] = V;
  return ids;
}

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

describe('embedding', () => {
  for (const bf16 of [false, true]) {
    it(`gather GPU = CPU, table ${bf16 ? 'bf16' : 'f32'} [50, 37], 33 ids (repeats, out-of-range → 0)`, async () => {
      const V = 50, H = 37, T = 33;
      let E = rand(V * H, 1);
      if (bf16) E = unpackBf16(packBf16(E), V * H);
      const ids = makeIds(T, V);
      const tE = fromData(E, [V, H], bf16 ? 'bf16' : 'f32'), tid = fromData(ids, [T]);
      const out = embedding(tid, tE);
      const [g] = await readMany([out]);
      expect(out.shape).toEqual([T, H]);
      expectClose(g, embeddingCpu(ids, E, V), 'out', 0, 0);
    });
  }

  it('gathers from row shards (odd row counts, mixed dtypes) like from one table', async () => {
    const V = 51, H = 7, ids = makeIds(40, V);
    const E = unpackBf16(packBf16(rand(V * H, 3)), V * H);
    const shards = [fromData(E.slice(0, 21 * H), [21, H], 'bf16'), fromData(E.slice(21 * H, 30 * H), [9, H], 'f32'), fromData(E.slice(30 * H), [21, H], 'bf16')];
    const tid = fromData(ids, [4, 10]);
    const out = embedding(tid, shards);
    const [g] = await readMany([out]);
    expect(out.shape).toEqual([4, 10, H]);
    expectClose(g, embeddingCpu(ids, E, V), 'out', 0, 0);
  });

  it('scatter-add backward GPU = CPU, deterministic, accumulating, sharded', async () => {
    const V = 50, H = 37, T = 65;
    const ids = makeIds(T, V), dy = rand(T * H, 7);
    const tid = fromData(ids, [T]), tdy = fromData(dy, [T, H]);
    const dE = embeddingBackward(tid, tdy, V);
    const dE2 = embeddingBackward(tid, tdy, V);
    const base = rand(V * H, 8), acc = fromData(base, [V, H]);
    embeddingBackwardAccumulate(tid, tdy, acc);
    const s0 = fromData(base.slice(0, 13 * H), [13, H]), s1 = fromData(base.slice(13 * H), [V - 13, H]);
    embeddingBackwardAccumulate(tid, tdy, [s0, s1]);
    const [g, g2, ga, gs0, gs1] = await readMany([dE, dE2, acc, s0, s1]);
    const ref = embeddingBackwardCpu(ids, dy, V);
    expectClose(g, ref, 'dE');
    expect(Array.from(g2)).toEqual(Array.from(g)); // same bits every run
    const refAcc = Float32Array.from(ref, (v, i) => v + base[i]);
    expectClose(ga, refAcc, 'dE accumulated');
    expectClose([...gs0, ...gs1], refAcc, 'dE sharded');
  });

  it('CPU backward matches a finite difference of the gather', () => {
    const V = 6, H = 3, ids = Int32Array.from([2, 5, 2, 0, 2]), dy = rand(ids.length * H, 4), E = rand(V * H, 5);
    const dE = embeddingBackwardCpu(ids, dy, V);
    const loss = (e: Float32Array) => embeddingCpu(ids, e, V).reduce((s, v, i) => s + v * dy[i], 0);
    for (const i of [2 * H + 1, 5 * H, 4 * H + 2]) {
      const a = Float32Array.from(E), b = Float32Array.from(E);
      a[i] += 0.5; b[i] -= 0.5;
      expect((loss(a) - loss(b)) / (a[i] - b[i])).toBeCloseTo(dE[i], 5);
    }
  });

  it('names the tensors on bad input', () => {
    const E = fromData(rand(12, 1), [4, 3], 'f32', 'embed_tokens');
    expect(() => embedding(fromData(new Float32Array(2), [2], 'f32', 'ids'), E)).toThrow(/ids "ids" must be i32/);
    expect(() => embedding(fromData(new Int32Array(2), [2]), [E, fromData(rand(8, 1), [2, 4], 'f32', 'shard1')])).toThrow(/"shard1" \[2,4\] must be \[rows, 3\]/);
  });
});
