import { describe, expect, it } from 'vitest';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { crc32 } from '../base/crc32.ts';
import {
  MemoryKV, decodeCheckpoint, discardCheckpointsAfter, encodeCheckpoint, listCheckpoints, loadLatestCheckpoint, loadNewestValidCheckpoint, saveCheckpoint,
  type Checkpoint,
} from './checkpoint.ts';

function ck(step: number): Checkpoint {
  return {
    runId: 'r1', step, epoch: 0, dataPosition: step, config: { lr: 1e-4 },
    lora: { a: { shape: [2], data: Float32Array.from([step, -step]) } },
    optimizer: { m: {}, v: {} }, metrics: [{ step, loss: 1 / (step + 1) }], savedAt: 0,
  };
}

describe('checkpoints', () => {
  it('save, load latest, keep the newest two', async () => {
    const kv = new MemoryKV();
    for (let s = 1; s <= 4; s++) await saveCheckpoint(kv, ck(s));
    const got = await loadLatestCheckpoint(kv, 'r1');
    expect(got?.step).toBe(4);
    expect(Array.from(got!.lora.a.data)).toEqual([4, -4]);
    expect((await listCheckpoints(kv, 'r1')).length).toBe(2);
  });

  it('a write interrupted mid-way leaves the previous checkpoint as latest', async () => {
    const kv = new MemoryKV();
    await saveCheckpoint(kv, ck(1));
    // The "tab closes" while the new checkpoint value is being written: the transaction aborts.
    const broken = Object.assign(Object.create(kv), {
      set: async (k: string, v: unknown) => {
        if (k.startsWith('ckpt/')) throw new DOMException('The transaction was aborted', 'AbortError');
        return kv.set(k, v);
      },
    });
    await expect(saveCheckpoint(broken, ck(2))).rejects.toThrow(/aborted/);
    expect((await loadLatestCheckpoint(kv, 'r1'))?.step).toBe(1);
    // The pointer flip itself failing also keeps step 1 (the new value is an orphan, swept later).
    const noFlip = Object.assign(Object.create(kv), {
      set: async (k: string, v: unknown) => {
        if (k.startsWith('run/')) throw new DOMException('The transaction was aborted', 'AbortError');
        return kv.set(k, v);
      },
    });
    await expect(saveCheckpoint(noFlip, ck(3))).rejects.toThrow();
    expect((await loadLatestCheckpoint(kv, 'r1'))?.step).toBe(1);
    await saveCheckpoint(kv, ck(4));
    expect((await loadLatestCheckpoint(kv, 'r1'))?.step).toBe(4);
    expect((await listCheckpoints(kv, 'r1')).length).toBe(2);
  });

  it('no checkpoint yet → undefined', async () => {
    expect(await loadLatestCheckpoint(new MemoryKV(), 'nope')).toBeUndefined();
  });

  it('CRC32 is zlib\'s; a checkpoint round-trips through its bytes exactly', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    const buf = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7) ^ (i >> 5));
    for (const [a, b] of [[0, 5000], [1, 4999], [4, 1003], [3, 3], [2, 9]]) expect(crc32(buf.subarray(a, b)), `[${a}, ${b})`).toBe(zlibCrc32(buf.subarray(a, b)) >>> 0);
    const c = { ...ck(3), extra: { 'v_head.weight': { shape: [2], data: Float32Array.from([0.25, -1]) } } };
    const back = decodeCheckpoint(encodeCheckpoint(c));
    expect(back).toEqual(c);
  });

  it('refuses to save NaN/Inf: the previous checkpoint stays latest', async () => {
    const kv = new MemoryKV();
    await saveCheckpoint(kv, ck(1));
    const bad = ck(2);
    bad.optimizer.v = { a: { shape: [2], data: Float32Array.from([1, NaN]) } };
    await expect(saveCheckpoint(kv, bad)).rejects.toThrow(/Run "r1" step 2: refusing to save a checkpoint whose v tensor "a" holds NaN at index 1/);
    expect((await loadLatestCheckpoint(kv, 'r1'))?.step).toBe(1);
    expect((await listCheckpoints(kv, 'r1')).length).toBe(1);
  });

  it('a damaged newest value (IndexedDB) falls back with a message naming both; a value of another build is named', async () => {
    const kv = new MemoryKV();
    await saveCheckpoint(kv, ck(1));
    const k2 = await saveCheckpoint(kv, ck(2));
    const b = kv.map.get(k2) as Uint8Array;
    b[30] ^= 1;
    const got = await loadNewestValidCheckpoint(kv, 'r1');
    expect(got!.checkpoint.step).toBe(1);
    expect(got!.message).toMatch(new RegExp(`^Checkpoint ${k2} \\(step 2\\) is damaged: ${k2}: checksum mismatch`));
    kv.map.set(k2, { runId: 'r1', step: 2 });
    expect((await loadNewestValidCheckpoint(kv, 'r1'))!.skipped[0].reason).toMatch(/not a checkpoint \(a object was stored; written by an older build\?\)/);
  });

  it('after a fault, checkpoints newer than the last good step are dropped and latest points back', async () => {
    const kv = new MemoryKV();
    for (const s of [1, 2, 3]) await saveCheckpoint(kv, ck(s)); // steps 2 and 3 are kept
    expect(await discardCheckpointsAfter(kv, 'r1', 2)).toBe(2);
    expect((await loadLatestCheckpoint(kv, 'r1'))?.step).toBe(2);
    expect(await discardCheckpointsAfter(kv, 'r1', 0)).toBeUndefined();
    expect(await loadLatestCheckpoint(kv, 'r1')).toBeUndefined();
  });
});
