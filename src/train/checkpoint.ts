// Checkpoints of a training run in a key-value store (IndexedDB through idb-keyval in the browser
// and the worker; a Map in Node). Atomic by construction: a checkpoint is written whole under a new
// key, and only then does the run's `latest` pointer flip to it. A tab closed mid-write leaves the
// pointer on the previous, complete checkpoint; the orphan is swept on the next save.

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
  /** optimizer steps done */
  step: number;
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

export async function saveCheckpoint(kv: KV, ck: Checkpoint, keep = 2): Promise<string> {
  const key = `${prefix(ck.runId)}${String(ck.step).padStart(8, '0')}-${Date.now().toString(36)}`;
  await kv.set(key, ck);
  const previous = await kv.get<string>(latestKey(ck.runId));
  await kv.set(latestKey(ck.runId), key);
  // Sweep: keep the one just written and the previous one; orphans of interrupted writes go too.
  const keepKeys = new Set([key, previous].slice(0, keep));
  for (const k of await listCheckpoints(kv, ck.runId)) if (!keepKeys.has(k)) await kv.del(k);
  return key;
}

export async function loadLatestCheckpoint(kv: KV, runId: string): Promise<Checkpoint | undefined> {
  const key = await kv.get<string>(latestKey(runId));
  if (!key) return undefined;
  const ck = await kv.get<Checkpoint>(key);
  if (!ck) throw new Error(`Run "${runId}": its latest checkpoint (${key}) is missing from storage. Older checkpoints: ${(await listCheckpoints(kv, runId)).join(', ') || 'none'}.`);
  return ck;
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
