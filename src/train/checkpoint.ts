// Checkpoints of a training run in a key-value store (IndexedDB through idb-keyval in the browser
// and the worker; files in Node: src/cli/files.ts fileKV). Atomic by construction: a checkpoint is
// written whole under a new key, and only then does the run's `latest` pointer flip to it. A tab
// closed mid-write leaves the pointer on the previous, complete checkpoint; the orphan is swept on
// the next save.
//
// Each checkpoint is stored as bytes: "PWCK", format version (u32), payload length (u64), CRC32 of
// the payload (u32), then the payload, a safetensors file (tensors lora/…, m/…, v/…, extra/…; the
// run's scalars as JSON in its metadata, so Python can read it too). Loading checks the length
// (a torn or truncated value) and the CRC32 (flipped or overwritten bytes) before decoding, and a
// bad newest checkpoint falls back to the newest valid one, with a message naming both.
// CRC32 rather than SHA-256: the threat is accidental damage, not an adversary; CRC32 catches every
// burst of up to 32 bits and random damage but for 1 in 2³², runs synchronously in a few lines of
// plain TS in every front end (SHA-256 is async through crypto.subtle in the browser) and at
// hundreds of MB/s. Non-finite values are refused at save: NaN never reaches a checkpoint.
import { readSafetensors, writeSafetensors, type StWriteTensor } from '../model/safetensors.ts';
import { crc32 } from '../base/crc32.ts';

export interface KV {
  get<T>(key: string): Promise<T | undefined>;
  set(key: string, value: unknown): Promise<void>;
  del(key: string): Promise<void>;
  keys(): Promise<string[]>;
}

export interface NamedTensor {
  shape: number[];
  data: Float32Array;
}

export interface Checkpoint {
  runId: string;
  /** trainer steps done (one rollout each for PPO) */
  step: number;
  /**
   * AdamW's own step count (torch state["step"]): PPO takes num_ppo_epochs × num_mini_batches of
   * them per trainer step. Absent in checkpoints written before it existed (then it equals step).
   */
  optimizerStep?: number;
  epoch: number;
  /**
   * samples consumed in the current epoch (position in its shuffled order). No RNG state is kept:
   * the epoch order, dropout masks and sampling seeds all derive from (seed, epoch, step).
   */
  dataPosition: number;
  config: unknown;
  lora: Record<string, NamedTensor>;
  /** AdamW first and second moments, same keys as lora (plus optional value head) */
  optimizer: { m: Record<string, NamedTensor>; v: Record<string, NamedTensor> };
  extra?: Record<string, NamedTensor>;
  metrics: Record<string, number>[];
  savedAt: number;
}

const latestKey = (runId: string) => `run/${runId}/latest`;
const prefix = (runId: string) => `ckpt/${runId}/`;
const MAGIC = 0x4b435750; // "PWCK" little-endian
const VERSION = 2;
const HEAD = 20;

export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointError';
  }
}

const GROUPS = ['lora', 'm', 'v', 'extra'] as const;
function groups(ck: Checkpoint): Record<(typeof GROUPS)[number], Record<string, NamedTensor>> {
  return { lora: ck.lora, m: ck.optimizer.m, v: ck.optimizer.v, extra: ck.extra ?? {} };
}

/** A checkpoint as the bytes stored (throws CheckpointError on a NaN/Inf value: never saved). */
export function encodeCheckpoint(ck: Checkpoint): Uint8Array {
  const tensors: StWriteTensor[] = [];
  for (const [g, map] of Object.entries(groups(ck))) {
    for (const [name, t] of Object.entries(map)) {
      const bad = t.data.findIndex((x) => !Number.isFinite(x));
      if (bad >= 0) throw new CheckpointError(`Run "${ck.runId}" step ${ck.step}: refusing to save a checkpoint whose ${g} tensor "${name}" holds ${t.data[bad]} at index ${bad}`);
      tensors.push({ name: `${g}/${name}`, dtype: 'F32', shape: t.shape, data: t.data });
    }
  }
  const { lora: _l, optimizer: _o, extra: _e, ...scalars } = ck;
  const payload = writeSafetensors(tensors, { format: 'patchwork-checkpoint', checkpoint: JSON.stringify({ ...scalars, extra: !!ck.extra }) });
  const out = new Uint8Array(HEAD + payload.byteLength);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, VERSION, true);
  dv.setBigUint64(8, BigInt(payload.byteLength), true);
  dv.setUint32(16, crc32(payload), true);
  out.set(payload, HEAD);
  return out;
}

/** Bytes from encodeCheckpoint back to a checkpoint; throws CheckpointError saying what is wrong. */
export function decodeCheckpoint(bytes: Uint8Array, where = 'checkpoint'): Checkpoint {
  if (bytes.byteLength < HEAD) throw new CheckpointError(`${where}: truncated (${bytes.byteLength} bytes, shorter than the ${HEAD}-byte header)`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dv.getUint32(0, true) !== MAGIC) throw new CheckpointError(`${where}: not a checkpoint (bad magic)`);
  const version = dv.getUint32(4, true);
  if (version !== VERSION) throw new CheckpointError(`${where}: format version ${version}, this build reads ${VERSION}`);
  const length = Number(dv.getBigUint64(8, true));
  const have = bytes.byteLength - HEAD;
  if (have !== length) throw new CheckpointError(`${where}: truncated or torn (${have} payload bytes, the header says ${length})`);
  const payload = bytes.subarray(HEAD);
  const want = dv.getUint32(16, true), got = crc32(payload);
  if (want !== got) throw new CheckpointError(`${where}: checksum mismatch (CRC32 ${got.toString(16).padStart(8, '0')}, stored ${want.toString(16).padStart(8, '0')}): the bytes were damaged`);
  let st, meta;
  try {
    st = readSafetensors(payload, where);
    meta = JSON.parse(st.metadata.checkpoint ?? '');
  } catch (e) {
    throw new CheckpointError(`${where}: unreadable payload (${(e as Error).message})`);
  }
  const { extra: hasExtra, ...scalars } = meta as Omit<Checkpoint, 'lora' | 'optimizer' | 'extra'> & { extra: boolean };
  const g: Record<string, Record<string, NamedTensor>> = { lora: {}, m: {}, v: {}, extra: {} };
  for (const [name, t] of st.tensors) {
    const slash = name.indexOf('/');
    const group = g[name.slice(0, slash)];
    if (slash < 0 || !group) throw new CheckpointError(`${where}: unexpected tensor "${name}"`);
    group[name.slice(slash + 1)] = { shape: t.shape, data: new Float32Array(t.bytes.slice().buffer) };
  }
  return { ...scalars, lora: g.lora, optimizer: { m: g.m, v: g.v }, ...(hasExtra ? { extra: g.extra } : {}) } as Checkpoint;
}

/** The step written into a checkpoint key (ckpt/<run>/<step:8>-<time>). */
const keyStep = (key: string) => Number(/\/(\d{8})-[^/]*$/.exec(key)?.[1] ?? NaN);

export async function saveCheckpoint(kv: KV, ck: Checkpoint, keep = 2): Promise<string> {
  const bytes = encodeCheckpoint(ck);
  const key = `${prefix(ck.runId)}${String(ck.step).padStart(8, '0')}-${Date.now().toString(36)}`;
  await kv.set(key, bytes);
  const previous = await kv.get<string>(latestKey(ck.runId));
  await kv.set(latestKey(ck.runId), key);
  // Sweep: keep the one just written and the previous one; orphans of interrupted writes go too.
  const keepKeys = new Set([key, previous].slice(0, keep));
  for (const k of await listCheckpoints(kv, ck.runId)) if (!keepKeys.has(k)) await kv.del(k);
  return key;
}

/** Read and verify one stored checkpoint; throws CheckpointError naming the key and the fault. */
export async function readCheckpoint(kv: KV, key: string): Promise<Checkpoint> {
  let v: unknown;
  try {
    v = await kv.get<unknown>(key);
  } catch (e) {
    throw new CheckpointError(`${key}: unreadable (${(e as Error).message})`);
  }
  if (v === undefined) throw new CheckpointError(`${key}: missing from storage`);
  if (v instanceof Uint8Array) return decodeCheckpoint(v, key);
  if (ArrayBuffer.isView(v)) return decodeCheckpoint(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), key);
  throw new CheckpointError(`${key}: not a checkpoint (a ${typeof v} was stored; written by an older build?)`);
}

export interface LoadedCheckpoint {
  checkpoint: Checkpoint;
  key: string;
  /** newer checkpoints that failed verification, newest first, with why */
  skipped: { key: string; step: number; reason: string }[];
  /** set when a newer checkpoint was skipped: names both, for the front end to show */
  message?: string;
}

/**
 * The newest checkpoint of a run that verifies: the `latest` pointer first, then every other stored
 * checkpoint newest first. Undefined when the run has none; CheckpointError when all are bad.
 */
export async function loadNewestValidCheckpoint(kv: KV, runId: string): Promise<LoadedCheckpoint | undefined> {
  const latest = await kv.get<string>(latestKey(runId));
  const keys = (await listCheckpoints(kv, runId)).reverse();
  const order = latest ? [latest, ...keys.filter((k) => k !== latest)] : keys;
  if (!order.length) return undefined;
  const skipped: LoadedCheckpoint['skipped'] = [];
  for (const key of order) {
    try {
      const checkpoint = await readCheckpoint(kv, key);
      const message = skipped.length
        ? `Checkpoint ${skipped[0].key} (step ${skipped[0].step}) is damaged: ${skipped.map((s) => s.reason).join('; ')}. Resumed from ${key} (step ${checkpoint.step}), the newest valid one, instead.`
        : undefined;
      return { checkpoint, key, skipped, message };
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw e;
      skipped.push({ key, step: keyStep(key), reason: e.message });
    }
  }
  throw new CheckpointError(`Run "${runId}": no valid checkpoint to resume from; every stored one is damaged: ${skipped.map((s) => s.reason).join('; ')}. Start the run again (delete it to clear the damaged checkpoints).`);
}

/** The newest valid checkpoint (see loadNewestValidCheckpoint), or undefined when there is none. */
export async function loadLatestCheckpoint(kv: KV, runId: string): Promise<Checkpoint | undefined> {
  return (await loadNewestValidCheckpoint(kv, runId))?.checkpoint;
}

/**
 * Delete a run's checkpoints of steps after `step` (after a TrainingFault: they hold parameters
 * that are not trusted) and point `latest` at the newest one left. Returns its step, if any.
 */
export async function discardCheckpointsAfter(kv: KV, runId: string, step: number): Promise<number | undefined> {
  const keys = await listCheckpoints(kv, runId);
  const left: string[] = [];
  for (const k of keys) {
    if (keyStep(k) > step) await kv.del(k);
    else left.push(k);
  }
  const newest = left[left.length - 1];
  if (newest) await kv.set(latestKey(runId), newest);
  else await kv.del(latestKey(runId));
  return newest === undefined ? undefined : keyStep(newest);
}

/**
 * Sweep a run at start: keep `latest` and the newest checkpoint before it (the fallback); drop the
 * rest, including orphans newer than `latest` (a save interrupted before its pointer flipped).
 * Without a pointer the newest two stay. Returns the keys removed.
 */
export async function sweepCheckpoints(kv: KV, runId: string): Promise<string[]> {
  const latest = await kv.get<string>(latestKey(runId));
  const keys = await listCheckpoints(kv, runId);
  const keep = new Set(latest && keys.includes(latest) ? [latest, keys.filter((k) => k < latest).pop()] : keys.slice(-2));
  const gone = keys.filter((k) => !keep.has(k));
  for (const k of gone) await kv.del(k);
  return gone;
}

export async function listCheckpoints(kv: KV, runId: string): Promise<string[]> {
  return (await kv.keys()).filter((k) => typeof k === 'string' && k.startsWith(prefix(runId))).sort();
}

export async function deleteRun(kv: KV, runId: string): Promise<void> {
  for (const k of await listCheckpoints(kv, runId)) await kv.del(k);
  await kv.del(latestKey(runId));
}

/** In-memory KV for Node and tests; structured-clones like IndexedDB does. */
export class MemoryKV implements KV {
  readonly map = new Map<string, unknown>();
  async get<T>(key: string) {
    const v = this.map.get(key);
    return v === undefined ? undefined : (structuredClone(v) as T);
  }
  async set(key: string, value: unknown) {
    this.map.set(key, structuredClone(value));
  }
  async del(key: string) {
    this.map.delete(key);
  }
  async keys() {
    return [...this.map.keys()];
  }
}

/** idb-keyval in a browser or worker. */
export async function idbKV(dbName = 'patchwork-checkpoints'): Promise<KV> {
  const idb = await import('idb-keyval');
  const store = idb.createStore(dbName, 'kv');
  return {
    get: (k) => idb.get(k, store),
    set: (k, v) => idb.set(k, v, store),
    del: (k) => idb.del(k, store),
    keys: async () => (await idb.keys(store)).map(String),
  };
}
