// Engine.exportMerged, the studio's merged export: from the adapter on the model (an imported one
// here) into the built-in tiny model, once through the download path (one Blob per file) and once
// into a picked folder (a File System Access API stand-in), which must also drop an earlier
// export's files that the new one does not replace.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { MemoryKV } from '../train/checkpoint.ts';
import { loadDefaultTokenizer } from '../data/tokenizer.ts';
import { Rng } from '../base/rng.ts';
import { initLora, saveAdapter, targetRegex } from '../model/lora.ts';
import { memorySource } from '../model/sources/source.ts';
import { loadModel, loadTokenizer } from '../model/weights.ts';
import { tinyConfig, tinySource } from '../model/tiny.ts';
import { adapterFromPeftFiles, exportMerged, type MergedSink } from '../export/merged.ts';
import { Engine } from './engine.ts';
import type { MergedProgress } from './api.ts';

let engine: Engine;
/** byte equality (vitest's toEqual walks a 40 MB array element by element) */
const same = (a: Uint8Array | undefined, b: Uint8Array) => !!a && a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
beforeAll(async () => {
  await nodeGpu();
  const kv = new MemoryKV();
  engine = new Engine({
    kv: async () => kv,
    decodeImage: async () => { throw new Error('no images here'); },
    loadSamples: async () => { throw new Error('no datasets here'); },
    lock: async () => () => undefined,
    defaultTokenizer: loadDefaultTokenizer,
  });
});
afterAll(async () => {
  await closeGpu();
});

/** A FileSystemDirectoryHandle stand-in: files in a Map, writables that commit on close. */
function fakeDir(files: Map<string, Uint8Array>) {
  const handle = (name: string) => ({
    kind: 'file' as const, name,
    async createWritable() {
      const parts: Uint8Array[] = [];
      return {
        async write(c: Uint8Array) { parts.push(c.slice()); },
        async close() {
          const out = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0));
          let o = 0;
          for (const p of parts) (out.set(p, o), (o += p.byteLength));
          files.set(name, out);
        },
        async abort() {},
      };
    },
  });
  return {
    kind: 'directory', name: 'picked',
    async getFileHandle(name: string, o?: { create?: boolean }) {
      if (!files.has(name) && !o?.create) throw new DOMException('not found', 'NotFoundError');
      return handle(name);
    },
    async removeEntry(name: string) {
      if (!files.delete(name)) throw new DOMException('not found', 'NotFoundError');
    },
    async *values() { for (const n of [...files.keys()]) yield handle(n); },
  } as unknown as FileSystemDirectoryHandle;
}

describe('Engine.exportMerged', () => {
  it('merges the adapter on the model into the tiny base: downloads one file at a time, or writes into a picked folder', async () => {
    const cfg = tinyConfig();
    const a = initLora(cfg, { r: 2, loraAlpha: 4, loraDropout: 0, targetModules: targetRegex(['q_proj', 'v_proj'], ['attn.qkv']), useRslora: false }, 3);
    const rng = new Rng(4);
    for (const m of a.modules.values()) for (let i = 0; i < m.B.length; i++) m.B[i] = rng.uniform(-0.1, 0.1);
    const peft = saveAdapter(a);
    await engine.importAdapter(Object.entries(peft).map(([name, bytes]) => ({ name, bytes })), { source: 'tiny' });

    const got = new Map<string, Uint8Array>();
    const progress: MergedProgress[] = [];
    const r = await engine.exportMerged({ maxShardSize: '20MB' }, async (f) => void got.set(f.name, new Uint8Array(await f.blob.arrayBuffer())), (p) => progress.push(p));
    expect(r.base).toMatch(/tiny/);
    expect(r.merged).toBe(a.modules.size);
    expect([...got.keys()]).toEqual(r.files.map((f) => f.name));
    expect(got.has('model.safetensors.index.json') && got.has('tokenizer.json') && got.has('chat_template.json')).toBe(true);
    expect([...got.keys()].at(-1)).toBe('config.json');
    expect(progress.at(-1)!.bytes).toBe(progress.at(-1)!.total);
    expect(progress.length).toBeLessThan(300);

    // the same bytes as the Node export of the same adapter into the same base
    const want = new Map<string, Uint8Array>();
    const sink: MergedSink = { async writeFile(name, _s, chunks) { const p: Uint8Array[] = []; for await (const c of chunks) p.push(c.slice()); want.set(name, new Uint8Array(await new Blob(p as BlobPart[]).arrayBuffer())); } };
    await exportMerged(tinySource(), adapterFromPeftFiles(peft as unknown as Record<string, Uint8Array>, cfg), sink, { maxShardSize: '20MB', extraFiles: { 'tokenizer.json': got.get('tokenizer.json')! } });
    for (const [n, b] of want) expect(same(got.get(n), b), n).toBe(true);
    const folder0 = memorySource(Object.fromEntries(got));
    const reloaded = await loadModel(folder0, { keep: false });
    expect(reloaded.files.length).toBe(3);
    // the folder is a model the studio and CLI load as any other: its tokenizer and chat template too
    const tok = await loadTokenizer(folder0, reloaded.config);
    expect(tok.special.imEnd).toBe(151645);
    expect(tok.encode('<|im_start|>user')[0]).toBe(151644);

    // a picked folder holding an earlier export with more shards: the leftovers go, the rest is the new export
    const folder = new Map<string, Uint8Array>([['model-00007-of-00009.safetensors', new Uint8Array(4)], ['config.json', new Uint8Array(2)], ['notes.txt', new Uint8Array(1)]]);
    await engine.exportMerged({ maxShardSize: '20MB', dir: fakeDir(folder) });
    expect([...folder.keys()].sort()).toEqual([...got.keys(), 'notes.txt'].sort());
    for (const [n, b] of got) expect(same(folder.get(n), b), n).toBe(true);
  });

  it('cancels mid-export: "cancelled", no config.json, a picked folder keeps none of its files; the next export runs whole', async () => {
    const cfg = tinyConfig();
    const a = initLora(cfg, { r: 2, loraAlpha: 4, loraDropout: 0, targetModules: targetRegex(['q_proj'], []), useRslora: false }, 5);
    for (const m of a.modules.values()) m.B.fill(0.01);
    await engine.importAdapter(Object.entries(saveAdapter(a)).map(([name, bytes]) => ({ name, bytes })), { source: 'tiny' });
    await engine.cancelExportMerged(); // nothing running: a no-op

    // the download path: cancelled once the first shard has been handed over
    const got: string[] = [];
    const dl = await engine.exportMerged({ maxShardSize: '20MB' }, async (f) => {
      got.push(f.name);
      if (got.length === 1) await engine.cancelExportMerged();
    }).catch((e: Error) => e);
    expect(String(dl)).toMatch(/^Error: Merged export cancelled after 1 file \(model-00001-of-00003\.safetensors\): config\.json was not downloaded/);
    expect(got).toEqual(['model-00001-of-00003.safetensors']);

    // a picked folder with an earlier export: cancelled while the third shard streams (after its
    // first tensor; shards 1 and 2 are lm_head and embed_tokens, one tensor each)
    const folder = new Map<string, Uint8Array>([['config.json', new Uint8Array(2)], ['notes.txt', new Uint8Array(1)]]);
    let seen: MergedProgress | undefined;
    const cut = await engine.exportMerged({ maxShardSize: '20MB', dir: fakeDir(folder) }, undefined, (p) => {
      if (!seen && p.filesDone === 2 && p.tensor) {
        seen = p;
        void engine.cancelExportMerged();
      }
    }).catch((e: Error) => e);
    expect(seen?.file).toBe('model-00003-of-00003.safetensors');
    expect(String(cut)).toMatch(/^Error: Merged export cancelled: the 2 files it had written into "picked" were removed; the folder holds no config\.json/);
    // shards 1 and 2 removed, shard 3 aborted (never swapped in), config.json of the earlier export gone before the start
    expect([...folder.keys()]).toEqual(['notes.txt']);

    // and the engine exports again, whole, with sane progress
    const progress: MergedProgress[] = [];
    const names = new Map<string, Uint8Array>();
    const r = await engine.exportMerged({ maxShardSize: '20MB' }, async (f) => void names.set(f.name, new Uint8Array(await f.blob.arrayBuffer())), (p) => progress.push(p));
    expect([...names.keys()].at(-1)).toBe('config.json');
    const planned = new Set(r.files.map((f) => f.name));
    const total = r.files.reduce((s, f) => s + f.size, 0);
    for (const [i, p] of progress.entries()) {
      expect(p.total).toBe(total);
      expect(p.files).toBe(r.files.length);
      expect(p.bytes).toBeLessThanOrEqual(total);
      if (i) expect(p.bytes).toBeGreaterThanOrEqual(progress[i - 1].bytes);
      expect(p.file === '' || planned.has(p.file), p.file).toBe(true);
      expect(p.filesDone).toBe(r.files.findIndex((f) => f.name === p.file) === -1 ? r.files.length : r.files.findIndex((f) => f.name === p.file));
    }
    expect(new Set(progress.map((p) => p.file))).toEqual(new Set([...planned, '']));
    expect(progress.at(-1)).toMatchObject({ file: '', bytes: total, filesDone: r.files.length });
  });
});
