import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, read, readMany, zeros } from '../gpu/tensor.ts';
import { dropout, dropoutBackwardAdd } from './dropout.ts';
import { dropoutCpu, dropoutStream, hash3 } from './cpu/dropout.ts';

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

const ramp = (n: number) => Float32Array.from({ length: n }, (_, i) => 0.25 + Math.sin(i * 0.37));

describe('dropout (hash mask)', () => {
  it('the hash is xxHash32 of three little-endian words', () => {
    // values from the reference xxHash (python xxhash 4.0.1: xxh32(le32(a) + le32(b) + le32(c)))
    expect(hash3(0, 0, 0)).toBe(834198146);
    expect(hash3(1, 2, 3)).toBe(525831304);
    expect(hash3(0xdeadbeef, 12345, 987654321)).toBe(466347135);
    expect(hash3(0xffffffff, 0x80000000, 7)).toBe(hash3(-1, -0x80000000, 7));
  });

  it('GPU mask equals the CPU mask bit for bit, forward and backward; p = 0 is the identity', async () => {
    const n = 1237, x = ramp(n), stream = dropoutStream('model.layers.0.self_attn.q_proj');
    for (const p of [0, 0.1, 0.5, 0.9]) {
      const tx = fromData(x, [n], 'f32', 'x');
      const y = dropout(tx, { p, seed: 42, stream });
      const acc = fromData(x, [n], 'f32', 'acc');
      dropoutBackwardAdd(tx, { p, seed: 42, stream }, acc);
      const [gy, ga] = await readMany([y, acc]);
      const want = dropoutCpu(x, p, 42, stream);
      expect(Array.from(gy)).toEqual(Array.from(want));
      expect(Array.from(ga)).toEqual(Array.from(x.map((v, i) => Math.fround(v + want[i]))));
      if (p === 0) expect(Array.from(gy)).toEqual(Array.from(x));
      for (const t of [tx, y, acc]) t.release();
    }
  });

  it('drops a fraction ≈ p; seeds and streams give different masks', async () => {
    const n = 20000, ones = new Float32Array(n).fill(1), tx = fromData(ones, [n], 'f32', 'ones');
    const mask = async (p: number, seed: number, stream: number) => {
      const y = dropout(tx, { p, seed, stream });
      const v = await read(y);
      y.release();
      return v.map((e) => (e === 0 ? 0 : 1));
    };
    for (const p of [0.05, 0.3, 0.7]) {
      const m = await mask(p, 3, 11);
      const dropped = m.reduce((a, b) => a + (1 - b), 0) / n;
      expect(Math.abs(dropped - p)).toBeLessThan(4 * Math.sqrt((p * (1 - p)) / n));
    }
    const diff = (a: Float32Array, b: Float32Array) => a.reduce((s, v, i) => s + (v !== b[i] ? 1 : 0), 0) / n;
    const a = await mask(0.5, 1, 11), b = await mask(0.5, 2, 11), c = await mask(0.5, 1, 12), a2 = await mask(0.5, 1, 11);
    expect(diff(a, a2)).toBe(0);
    for (const other of [b, c]) expect(Math.abs(diff(a, other) - 0.5)).toBeLessThan(0.03); // independent masks disagree half the time
    tx.release();
    const z = zeros([0], 'f32', 'empty');
    dropout(z, { p: 0.5, seed: 1, stream: 1 }).release();
  });
});
