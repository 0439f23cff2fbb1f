import { describe, expect, it } from 'vitest';
import { MemoryKV, listCheckpoints, loadLatestCheckpoint, saveCheckpoint, type Checkpoint } from './checkpoint.ts';

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
});
