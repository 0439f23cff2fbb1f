// Nothing saved is lost on disk: the adapter export replaces config + tensors together (a kill or a
// full disk leaves the previous pair byte-identical), and the checkpoint files verify and fall back.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileKV, writeDurable, writeFilesAtomic, type FileWriter } from './files.ts';
import { loadNewestValidCheckpoint, saveCheckpoint, sweepCheckpoints, listCheckpoints, type Checkpoint } from '../train/checkpoint.ts';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pw-files-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7) & 0xff);
const adapter = (v: number) => [
  { name: 'adapter_config.json', bytes: new TextEncoder().encode(JSON.stringify({ r: 4 * v, version: v })) },
  { name: 'adapter_model.safetensors', bytes: bytes(50_000 + v, v) },
];
async function readPair(dir: string) {
  return [await readFile(join(dir, 'adapter_config.json')), await readFile(join(dir, 'adapter_model.safetensors'))].map((b) => Buffer.from(b).toString('base64'));
}
const pairOf = (v: number) => adapter(v).map((f) => Buffer.from(f.bytes).toString('base64'));
const enospc = (): NodeJS.ErrnoException => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });

/** a writer that stores only `limit` bytes in all, then fails as a full disk does */
function fullDisk(limit: number): FileWriter {
  let left = limit;
  return async (path, b) => {
    const n = Math.min(left, b.byteLength);
    left -= n;
    await writeFile(path, b.subarray(0, n));
    if (n < b.byteLength) throw enospc();
  };
}

describe('writeFilesAtomic (adapter export)', () => {
  it('writes, replaces both files together, and leaves no old versions or temp links behind', async () => {
    const dir = join(root, 'a1', 'adapter');
    await writeFilesAtomic(dir, adapter(1));
    expect(await readPair(dir)).toEqual(pairOf(1));
    await writeFilesAtomic(dir, adapter(2));
    expect(await readPair(dir)).toEqual(pairOf(2));
    expect((await lstat(dir)).isSymbolicLink()).toBe(true);
    expect((await readdir(join(root, 'a1'))).length).toBe(2); // the link and one version folder
  });

  for (const limit of [0, 10, 40_000]) {
    it(`a full disk (ENOSPC after ${limit} bytes) leaves the previous adapter byte-identical`, async () => {
      const dir = join(root, `full${limit}`, 'adapter');
      await writeFilesAtomic(dir, adapter(1));
      await expect(writeFilesAtomic(dir, adapter(2), fullDisk(limit))).rejects.toThrow(/ENOSPC/);
      expect(await readPair(dir)).toEqual(pairOf(1));
      expect((await readdir(join(root, `full${limit}`))).length).toBe(2); // the half-written version was removed
      await writeFilesAtomic(dir, adapter(3));
      expect(await readPair(dir)).toEqual(pairOf(3));
    });
  }

  it('a kill (SIGKILL) in the middle of the export leaves the previous adapter byte-identical; the next export sweeps the leftovers', async () => {
    const parent = join(root, 'kill');
    const dir = join(parent, 'adapter');
    await writeFilesAtomic(dir, adapter(1));
    const script = join(root, 'kill-child.mts');
    const files = fileURLToPath(new URL('./files.ts', import.meta.url));
    // the child writes the config and half the tensors, says so, then hangs until killed
    await writeFile(script, `
      import { writeFile } from 'node:fs/promises';
      import { writeFilesAtomic } from ${JSON.stringify(files)};
      const big = new Uint8Array(50_002).fill(9);
      await writeFilesAtomic(${JSON.stringify(dir)}, [{ name: 'adapter_config.json', bytes: new Uint8Array([123, 125]) }, { name: 'adapter_model.safetensors', bytes: big }], async (p, b) => {
        await writeFile(p, b.subarray(0, b.byteLength >> 1));
        if (p.endsWith('.safetensors')) { process.stdout.write('mid-write\\n'); await new Promise(() => {}); }
      });
    `);
    const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    await new Promise<void>((ok, fail) => {
      child.stdout.on('data', (d) => String(d).includes('mid-write') && ok());
      child.on('exit', (c) => fail(new Error(`child exited (${c}) before mid-write: ${err}`)));
    });
    const dead = new Promise((ok) => child.on('exit', ok));
    child.kill('SIGKILL');
    await dead;
    expect(await readPair(dir)).toEqual(pairOf(1));
    expect((await readdir(parent)).length).toBe(3); // the link, the live version, the killed one's half version
    await writeFilesAtomic(dir, adapter(2));
    expect(await readPair(dir)).toEqual(pairOf(2));
    expect((await readdir(parent)).length).toBe(2);
  }, 60_000);

  it('adopts a real adapter folder from an older build, but refuses one holding other things (checkpoints)', async () => {
    const dir = join(root, 'legacy', 'adapter');
    await mkdir(dir, { recursive: true });
    for (const f of adapter(1)) await writeFile(join(dir, f.name), f.bytes);
    await writeFilesAtomic(dir, adapter(2));
    expect(await readPair(dir)).toEqual(pairOf(2));
    const mixed = join(root, 'mixed', 'out');
    await mkdir(join(mixed, 'checkpoints'), { recursive: true });
    for (const f of adapter(1)) await writeFile(join(mixed, f.name), f.bytes);
    await expect(writeFilesAtomic(mixed, adapter(2))).rejects.toThrow(/out is a folder holding checkpoints besides files: write the adapter to a folder of its own/);
    expect(await readPair(mixed)).toEqual(pairOf(1));
  });
});

function ck(step: number, runId = 'r'): Checkpoint {
  return {
    runId, step, epoch: 0, dataPosition: step, config: { lr: 1e-4 },
    lora: { 'a.lora_A.weight': { shape: [3], data: Float32Array.from([step, -step, 0.5]) } },
    optimizer: { m: { 'a.lora_A.weight': { shape: [3], data: new Float32Array(3).fill(0.1) } }, v: { 'a.lora_A.weight': { shape: [3], data: new Float32Array(3).fill(0.2) } } },
    metrics: [{ step, loss: 1 / step }], savedAt: 0,
  };
}
const ckFile = async (kv: ReturnType<typeof fileKV>, runId: string) => (await listCheckpoints(kv, runId)).map((k) => join(kv.dir, encodeURIComponent(k)));

describe('fileKV (checkpoints on disk)', () => {
  it('round-trips checkpoints; a damaged newest file falls back to the previous one, naming both', async () => {
    const kv = fileKV(join(root, 'ck1'));
    await saveCheckpoint(kv, ck(1));
    await saveCheckpoint(kv, ck(2));
    const [older, newest] = await ckFile(kv, 'r');
    const b = await readFile(newest);
    b[b.length - 5] ^= 0x40; // one flipped bit in the tensor data
    await writeFile(newest, b);
    const got = await loadNewestValidCheckpoint(kv, 'r');
    expect(got!.checkpoint.step).toBe(1);
    expect(Array.from(got!.checkpoint.lora['a.lora_A.weight'].data)).toEqual([1, -1, 0.5]);
    expect(got!.message).toMatch(/^Checkpoint ckpt\/r\/00000002-\w+ \(step 2\) is damaged: .*checksum mismatch \(CRC32 [0-9a-f]{8}, stored [0-9a-f]{8}\).*Resumed from ckpt\/r\/00000001-\w+ \(step 1\), the newest valid one, instead\./);
    expect(older).toContain('00000001');
  });

  it('a truncated newest file falls back; all damaged is a clear error', async () => {
    const kv = fileKV(join(root, 'ck2'));
    await saveCheckpoint(kv, ck(1));
    await saveCheckpoint(kv, ck(2));
    const [older, newest] = await ckFile(kv, 'r');
    await truncate(newest, 100);
    const got = await loadNewestValidCheckpoint(kv, 'r');
    expect(got!.checkpoint.step).toBe(1);
    expect(got!.skipped[0].reason).toMatch(/truncated or torn \(79 payload bytes, the header says \d+\)/);
    await writeFile(older, new Uint8Array([1, 0, 0]));
    await expect(loadNewestValidCheckpoint(kv, 'r')).rejects.toThrow(/^Run "r": no valid checkpoint to resume from; every stored one is damaged: ckpt\/r\/00000002-\w+: truncated or torn.*; ckpt\/r\/00000001-\w+: truncated \(2 bytes/);
  });

  it('stale temp files of killed writers are swept at start; live ones stay', async () => {
    const dir = join(root, 'ck3');
    const kv = fileKV(dir);
    await saveCheckpoint(kv, ck(1));
    // the pid of a process that has exited
    const gone = spawn(process.execPath, ['-e', '0']);
    const pid = gone.pid!;
    await new Promise((ok) => gone.on('exit', ok));
    const stale = `${encodeURIComponent('ckpt/r/00000002-x')}.${pid}.abc123.tmp`;
    const live = `${encodeURIComponent('ckpt/r/00000003-x')}.${process.ppid}.def456.tmp`;
    await writeFile(join(dir, stale), new Uint8Array(10));
    await writeFile(join(dir, live), new Uint8Array(10));
    expect(await kv.keys()).not.toContain('ckpt/r/00000002-x');
    expect(await kv.sweep()).toEqual([stale]);
    expect((await readdir(dir)).sort()).toContain(live);
    expect((await loadNewestValidCheckpoint(kv, 'r'))!.checkpoint.step).toBe(1);
  });

  it('a kill (SIGKILL) while a checkpoint is written leaves the previous one latest and valid; its temp file is swept', async () => {
    const dir = join(root, 'ck-kill');
    await saveCheckpoint(fileKV(dir), ck(1));
    const script = join(root, 'ck-kill-child.mts');
    const here = (f: string) => JSON.stringify(fileURLToPath(new URL(f, import.meta.url)));
    await writeFile(script, `
      import { writeFile } from 'node:fs/promises';
      import { fileKV } from ${here('./files.ts')};
      import { saveCheckpoint } from ${here('../train/checkpoint.ts')};
      const data = new Float32Array(20000).fill(0.5);
      const ck = { runId: 'r', step: 2, epoch: 0, dataPosition: 2, config: {}, lora: { a: { shape: [20000], data } }, optimizer: { m: {}, v: {} }, metrics: [], savedAt: 0 };
      await saveCheckpoint(fileKV(${JSON.stringify(dir)}, async (p, b) => {
        await writeFile(p, b.subarray(0, b.byteLength >> 1));
        process.stdout.write('mid-write\\n');
        await new Promise(() => {});
      }), ck);
    `);
    const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    await new Promise<void>((ok, fail) => {
      child.stdout.on('data', (d) => String(d).includes('mid-write') && ok());
      child.on('exit', (c) => fail(new Error(`child exited (${c}) before mid-write: ${err}`)));
    });
    const dead = new Promise((ok) => child.on('exit', ok));
    child.kill('SIGKILL');
    await dead;
    const kv = fileKV(dir);
    const swept = await kv.sweep();
    expect(swept.length).toBe(1);
    expect(swept[0]).toMatch(new RegExp(`^ckpt%2Fr%2F00000002-\\w+\\.${child.pid}\\.\\w+\\.tmp$`));
    const got = await loadNewestValidCheckpoint(kv, 'r');
    expect([got!.checkpoint.step, got!.skipped.length]).toEqual([1, 0]);
  }, 60_000);

  it('a failing write (full disk) keeps the latest pointer on the previous checkpoint; orphans are swept', async () => {
    const dir = join(root, 'ck4');
    await saveCheckpoint(fileKV(dir), ck(1));
    await expect(saveCheckpoint(fileKV(dir, fullDisk(30)), ck(2))).rejects.toThrow(/ENOSPC/);
    const kv = fileKV(dir);
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect((await loadNewestValidCheckpoint(kv, 'r'))!.checkpoint.step).toBe(1);
    // an orphan newer than latest (pointer flip lost) goes in the start-up sweep
    await kv.set('ckpt/r/00000005-zz', new Uint8Array([1, 2, 3]));
    expect(await sweepCheckpoints(kv, 'r')).toEqual(['ckpt/r/00000005-zz']);
    expect(writeDurable).toBeTypeOf('function');
  });
});
