import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile, unlink } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors, writeSafetensors } from './safetensors.ts';
import { f32ToBf16 } from '../gpu/bf16.ts';
import { configToJson } from './config.ts';
import { tinyConfig, tinyConfigJson, tinyFiles, tinySource, tinyWeights, weightFiles, type TinyOptions } from './tiny.ts';
import {
  canonicalName, expectedWeights, hubSource, layoutName, loadModel, loadTokenizer, localSource, memoryCache, memorySource, MissingFileError,
  type LoadProgress, type WeightMap,
} from './weights.ts';
import { dirCache, dirSource, qwenTokenizerJsonPath, serveModelFolders, writeFiles, writeTinyModelFolder, type ModelServer } from './sources/node.ts';
import { QWEN2_5_VL_CHAT_TEMPLATE } from './tiny.ts';

// small vocabulary: these tests are about files, not sizes
const SMALL: TinyOptions = { seed: 7, vocabSize: 1000, tieWordEmbeddings: true };
const golden = fileURLToPath(new URL('../../../shared/golden/', import.meta.url));
const enc = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));

function expectSameWeights(got: WeightMap, want: WeightMap) {
  expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
  for (const k of Object.keys(want)) {
    expect(got[k].shape, k).toEqual(want[k].shape);
    expect(got[k].dtype, k).toBe(want[k].dtype);
    expect(Buffer.from(got[k].data.buffer, got[k].data.byteOffset, got[k].data.byteLength).equals(Buffer.from(want[k].data.buffer, want[k].data.byteOffset, want[k].data.byteLength)), k).toBe(true);
  }
}

/** files of a small model with some edit applied to the weight map or config */
function files(opts: TinyOptions = SMALL, edit?: { weights?: (w: WeightMap) => void; config?: (c: Record<string, any>) => void }): Record<string, Uint8Array> {
  const cfgJson = tinyConfigJson(opts);
  const w = tinyWeights(tinyConfig(opts), opts.seed);
  edit?.weights?.(w);
  edit?.config?.(cfgJson);
  return { 'config.json': enc(cfgJson), ...weightFiles(w, opts) };
}

describe('names', () => {
  it('maps both layouts to hub names', () => {
    expect(canonicalName('model.language_model.layers.3.mlp.up_proj.weight')).toBe('model.layers.3.mlp.up_proj.weight');
    expect(canonicalName('model.visual.blocks.0.attn.qkv.bias')).toBe('visual.blocks.0.attn.qkv.bias');
    expect(canonicalName('lm_head.weight')).toBe('lm_head.weight');
    expect(layoutName('visual.merger.mlp.0.weight', 'transformers')).toBe('model.visual.merger.mlp.0.weight');
    expect(layoutName('model.norm.weight', 'transformers')).toBe('model.language_model.norm.weight');
    expect(layoutName('lm_head.weight', 'transformers')).toBe('lm_head.weight');
  });

  it('expects exactly the golden checkpoint tensors', async () => {
    const src = await dirSource(golden + 'tiny-qwen2_5_vl');
    const m = await loadModel(src);
    expect(Object.keys(m.weights).sort()).toEqual([...expectedWeights(m.config).keys()].sort());
    expect(m.layout).toBe('hub');
    expect(m.warnings).toEqual([]);
    expect(m.weights['visual.patch_embed.proj.weight'].shape).toEqual([32, 3, 2, 14, 14]);
    expect(m.weights['model.embed_tokens.weight'].dtype).toBe('bf16');
  });
});

describe('loading from memory, blobs and files', () => {
  const want = tinyWeights(tinyConfig(SMALL), SMALL.seed);

  it('reads a single-file hub-layout model', async () => {
    const m = await loadModel(memorySource(files()));
    expect(m.layout).toBe('hub');
    expect(m.files).toEqual(['model.safetensors']);
    expectSameWeights(m.weights, want);
  });

  it('reads the transformers ≥ 4.52 layout into hub names', async () => {
    const f = files({ ...SMALL, layout: 'transformers' });
    const n = Number(new DataView(f['model.safetensors'].buffer, f['model.safetensors'].byteOffset).getBigUint64(0, true));
    const keys = [...new TextDecoder().decode(f['model.safetensors'].subarray(8, 8 + n)).matchAll(/"(model\.[a-z_]+)\./g)].map((x) => x[1]);
    expect(keys).toContain('model.language_model');
    expect(keys).toContain('model.visual');
    const m = await loadModel(memorySource(f));
    expect(m.layout).toBe('transformers');
    expectSameWeights(m.weights, want);
  });

  it('reads shards with model.safetensors.index.json', async () => {
    const f = files({ ...SMALL, maxShardBytes: 60_000 });
    const shards = Object.keys(f).filter((k) => k.endsWith('.safetensors'));
    expect(shards.length).toBeGreaterThan(2);
    expect(shards[0]).toMatch(/^model-00001-of-000\d\d\.safetensors$/);
    const m = await loadModel(memorySource(f));
    expect(m.files).toEqual(shards.sort());
    expectSameWeights(m.weights, want);
  });

  it('reads browser-style File objects through slices', async () => {
    const f = files({ ...SMALL, maxShardBytes: 100_000 });
    const list = Object.entries(f).map(([name, b]) => new File([b as BlobPart], name));
    const m = await loadModel(localSource(list, 'dropped folder'));
    expectSameWeights(m.weights, want);
    await expect(localSource([new File(['{}'], 'x.json')]).read('config.json')).rejects.toThrow(/file "config\.json" not found \(the folder has x\.json\)/);
    // a picked directory: webkitRelativePath starts with the folder's own name
    const picked = Object.entries(f).map(([name, b]) => Object.defineProperty(new File([b as BlobPart], name), 'webkitRelativePath', { value: `my-model/${name}` }));
    expectSameWeights((await loadModel(localSource(picked))).weights, want);
  });

  it('converts F32 and F16 checkpoints to BF16 (or keeps F32)', async () => {
    const f32 = await loadModel(memorySource(files({ ...SMALL, dtype: 'F32' })));
    expectSameWeights(f32.weights, want); // BF16 values are exact in F32, and round back to themselves
    const kept = await loadModel(memorySource(files({ ...SMALL, dtype: 'F32' })), { keepF32: true });
    expect(kept.weights['model.norm.weight'].dtype).toBe('f32');
    const f16 = await loadModel(memorySource(files({ ...SMALL, dtype: 'F16' })));
    // weights whose BF16 values are exact in F16 come back identical; compare one bounded tensor
    const a = f16.weights['model.layers.0.self_attn.q_proj.weight'].data as Uint16Array;
    const b = want['model.layers.0.self_attn.q_proj.weight'].data as Uint16Array;
    let same = 0;
    for (let i = 0; i < a.length; i++) same += a[i] === b[i] ? 1 : 0;
    expect(same / a.length).toBeGreaterThan(0.95);
    expect(f32ToBf16(new Float32Array([1, -2.5, 1 + 2 ** -8, 1 + 3 * 2 ** -8, NaN]))).toEqual(new Uint16Array([0x3f80, 0xc020, 0x3f80, 0x3f82, 0x7fc0]));
  });

  it('reads an untied lm_head and reports a stored lm_head of a tied model', async () => {
    const untied = await loadModel(memorySource(files({ ...SMALL, tieWordEmbeddings: false })));
    expect(untied.weights['lm_head.weight'].shape).toEqual([1000, 128]);
    const extra = await loadModel(memorySource(files(SMALL, { weights: (w) => (w['lm_head.weight'] = w['model.embed_tokens.weight']) })));
    expect(extra.weights['lm_head.weight']).toBeUndefined();
    expect(extra.warnings[0]).toMatch(/lm_head\.weight present but tie_word_embeddings is true/);
  });

  it('streams tensor by tensor with byte progress', async () => {
    const seen: string[] = [];
    const prog: LoadProgress[] = [];
    const m = await loadModel(memorySource(files({ ...SMALL, maxShardBytes: 100_000 })), {
      keep: false, chunkBytes: 20_000, onTensor: (n) => void seen.push(n), onProgress: (p) => void prog.push(p),
    });
    expect(Object.keys(m.weights)).toEqual([]);
    expect(seen.sort()).toEqual(Object.keys(want).sort());
    const t = prog.filter((p) => p.phase === 'tensors');
    expect(t.length).toBeGreaterThan(5);
    for (let i = 1; i < t.length; i++) expect(t[i].loadedBytes).toBeGreaterThanOrEqual(t[i - 1].loadedBytes);
    const last = prog[prog.length - 1];
    expect(last.phase).toBe('done');
    expect(last.loadedBytes).toBe(last.totalBytes);
    expect(last.totalBytes).toBe(Object.values(want).reduce((a, w) => a + w.data.byteLength, 0));
  });
});

describe('bad inputs', () => {
  const load = (f: Record<string, Uint8Array>) => loadModel(memorySource(f, 'test-model'));

  it('names a missing tensor', async () => {
    await expect(load(files(SMALL, { weights: (w) => delete w['model.layers.1.mlp.down_proj.weight'] }))).rejects.toThrow(
      /test-model: 1 tensor\(s\) missing from the checkpoint: "model\.layers\.1\.mlp\.down_proj\.weight"/,
    );
    await expect(load(files({ ...SMALL, layout: 'transformers' }, { weights: (w) => delete w['visual.blocks.2.norm1.weight'] }))).rejects.toThrow(
      /"model\.visual\.blocks\.2\.norm1\.weight"/,
    );
    await expect(load(files(SMALL, { config: (c) => (c.tie_word_embeddings = false) }))).rejects.toThrow(/"lm_head\.weight".*tie_word_embeddings: false/);
  });

  it('names a shape that does not match the config', async () => {
    await expect(load(files(SMALL, { config: (c) => (c.intermediate_size = 200) }))).rejects.toThrow(
      /tensor "model\.layers\.\d\.mlp\.\w+_proj\.weight" has shape \[(320, 128|128, 320)\] but config\.json implies \[(200, 128|128, 200)\]/,
    );
    await expect(load(files(SMALL, { config: (c) => (c.vision_config.hidden_size = 48) }))).rejects.toThrow(/tensor "visual\.[\w.]+" has shape \[.*\] but config\.json implies \[.*48.*\]/);
  });

  it('rejects a truncated file', async () => {
    const f = files();
    const st = f['model.safetensors'];
    await expect(load({ ...f, 'model.safetensors': st.subarray(0, st.byteLength - 100) })).rejects.toThrow(/ends at data byte \d+ but the file has only \d+ data bytes \(truncated\?\)/);
    await expect(load({ ...f, 'model.safetensors': st.subarray(0, 200) })).rejects.toThrow(/header of \d+ bytes runs past the end of the 200-byte file/);
    await expect(load({ ...f, 'model.safetensors': st.subarray(0, 5) })).rejects.toThrow(/5 bytes, too short/);
  });

  it('rejects malicious headers: overlapping offsets, absurd length, bad JSON, bad dtype', async () => {
    const cfg = tinyConfigJson(SMALL);
    const withHeader = (header: object, dataBytes: number) => {
      let json = JSON.stringify(header);
      while ((8 + json.length) % 8) json += ' ';
      const hb = new TextEncoder().encode(json);
      const out = new Uint8Array(8 + hb.byteLength + dataBytes);
      new DataView(out.buffer).setBigUint64(0, BigInt(hb.byteLength), true);
      out.set(hb, 8);
      return out;
    };
    const over = withHeader({ a: { dtype: 'BF16', shape: [4], data_offsets: [0, 8] }, b: { dtype: 'BF16', shape: [4], data_offsets: [4, 12] } }, 12);
    await expect(load({ 'config.json': enc(cfg), 'model.safetensors': over })).rejects.toThrow(/tensors "a" and "b" overlap/);
    const huge = new Uint8Array(16);
    new DataView(huge.buffer).setBigUint64(0, 2n ** 62n, true);
    await expect(load({ 'config.json': enc(cfg), 'model.safetensors': huge })).rejects.toThrow(/header length \d+ is not plausible/);
    const notJson = withHeader({}, 0);
    notJson.set(new TextEncoder().encode('{"x'), 8);
    await expect(load({ 'config.json': enc(cfg), 'model.safetensors': notJson })).rejects.toThrow(/header is not valid JSON/);
    const span = withHeader({ a: { dtype: 'BF16', shape: [4], data_offsets: [0, 6] } }, 6);
    await expect(load({ 'config.json': enc(cfg), 'model.safetensors': span })).rejects.toThrow(/"a" BF16\[4\] needs 8 bytes but data_offsets span 6/);
    const unk = withHeader({ a: { dtype: 'Q4', shape: [4], data_offsets: [0, 4] } }, 4);
    await expect(load({ 'config.json': enc(cfg), 'model.safetensors': unk })).rejects.toThrow(/"a" has unknown dtype "Q4"/);
    // an I32 weight
    const w = tinyWeights(tinyConfig(SMALL), 1);
    const f = weightFiles(w);
    const ints = writeSafetensors(Object.entries(w).map(([name, t]) => (name === 'model.norm.weight' ? { name, dtype: 'I32' as const, shape: [32], data: new Int32Array(32) } : { name, dtype: 'BF16' as const, shape: t.shape, data: t.data as Uint16Array })));
    expect(f['model.safetensors'].byteLength).toBeGreaterThan(0);
    await expect(load({ 'config.json': enc(cfg), 'model.safetensors': ints })).rejects.toThrow(/model\.norm\.weight/);
  });

  it('rejects structurally bad headers: reversed or out-of-range offsets, bad shapes, non-object header or metadata', async () => {
    const cfg = enc(tinyConfigJson(SMALL));
    const st = (header: unknown, dataBytes: number) => {
      let json = JSON.stringify(header);
      while ((8 + json.length) % 8) json += ' ';
      const hb = new TextEncoder().encode(json);
      const out = new Uint8Array(8 + hb.byteLength + dataBytes);
      new DataView(out.buffer).setBigUint64(0, BigInt(hb.byteLength), true);
      out.set(hb, 8);
      return { 'config.json': cfg, 'model.safetensors': out };
    };
    await expect(load(st({ a: { dtype: 'F32', shape: [1], data_offsets: [8, 4] } }, 8))).rejects.toThrow(/^test-model: model\.safetensors: tensor "a" has invalid data_offsets \[8,4\]$/);
    await expect(load(st({ a: { dtype: 'F32', shape: [4], data_offsets: [100, 116] } }, 16))).rejects.toThrow(/tensor "a" ends at data byte 116 but the file has only 16 data bytes \(truncated\?\)/);
    await expect(load(st({ a: { dtype: 'F32', shape: [-1, 2], data_offsets: [0, 8] } }, 8))).rejects.toThrow(/tensor "a" has an invalid shape \[-1,2\]/);
    await expect(load(st({ a: { dtype: 'F32', shape: [2.5], data_offsets: [0, 8] } }, 8))).rejects.toThrow(/tensor "a" has an invalid shape \[2\.5\]/);
    await expect(load(st([1, 2], 0))).rejects.toThrow(/model\.safetensors: header is not a JSON object/);
    await expect(load(st({ __metadata__: 'pt' }, 0))).rejects.toThrow(/__metadata__ is not an object/);
  });

  it('checks the shard index against the shards', async () => {
    const f = files({ ...SMALL, maxShardBytes: 100_000 });
    const idx = JSON.parse(new TextDecoder().decode(f['model.safetensors.index.json']));
    const g = { ...f };
    delete g['model-00002-of-' + Object.keys(f).find((k) => k.startsWith('model-00001'))!.slice(15, 20) + '.safetensors'];
    await expect(load(g)).rejects.toThrow(/lists shard "model-00002-of-\d+\.safetensors" but the folder has no such file/);
    const wrong = structuredClone(idx);
    const first = Object.keys(wrong.weight_map)[0];
    wrong.weight_map[first] = Object.values(wrong.weight_map).find((v) => v !== wrong.weight_map[first]);
    await expect(load({ ...f, 'model.safetensors.index.json': enc(wrong) })).rejects.toThrow(/places tensor .* in this shard but its header does not have it/);
    const evil = structuredClone(idx);
    evil.weight_map[first] = '../../etc/passwd';
    await expect(load({ ...f, 'model.safetensors.index.json': enc(evil) })).rejects.toThrow(/is not a file name inside the folder/);
    await expect(load({ ...f, 'model.safetensors.index.json': enc({ nope: 1 }) })).rejects.toThrow(/has no "weight_map" object/);
  });

  it('names missing files', async () => {
    const f = files();
    const { 'config.json': _c, ...noConfig } = f;
    await expect(load(noConfig)).rejects.toThrow(/test-model: config\.json is missing/);
    await expect(load({ 'config.json': f['config.json'] })).rejects.toThrow(/neither model\.safetensors nor model\.safetensors\.index\.json/);
    await expect(load({ ...f, 'config.json': enc({ ...configToJson(tinyConfig(SMALL)), model_type: 'llama', architectures: ['LlamaForCausalLM'] }) })).rejects.toThrow(
      /test-model: config\.json: model_type "llama" \(architectures: LlamaForCausalLM\) is not Qwen2\.5-VL/,
    );
  });
});

describe('hub source over local HTTP', () => {
  let dir: string, server: ModelServer;
  const repo = 'patchwork/tiny-sharded';
  const opts: TinyOptions = { ...SMALL, maxShardBytes: 80_000 };
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pw-hub-'));
    await writeFiles(join(dir, 'models', repo), tinyFiles(opts));
    server = await serveModelFolders(join(dir, 'models'));
  });
  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('loads a sharded model with Range requests, then again from the cache without downloading', async () => {
    const want = tinyWeights(tinyConfig(opts), opts.seed);
    const cacheDir = join(dir, 'cache');
    const first = hubSource(repo, { endpoint: server.endpoint, cache: dirCache(cacheDir) });
    const m1 = await loadModel(first, { chunkBytes: 32_000 });
    expectSameWeights(m1.weights, want);
    expect(first.stats.networkBytes).toBeGreaterThan(0);
    const ranged = server.log.filter((r) => r.range);
    expect(ranged.length).toBeGreaterThan(m1.files.length * 2); // length + header + tensor chunks per shard
    expect(ranged.every((r) => r.status === 206)).toBe(true);
    expect(server.log.some((r) => r.range === 'bytes=0-7')).toBe(true);
    expect(server.log.filter((r) => r.range === 'bytes=0-7').length).toBe(m1.files.length); // size and header length in one request
    // no response was a whole shard
    expect(server.log.filter((r) => r.path.endsWith('.safetensors') && !r.range)).toEqual([]);

    const before = server.log.length;
    const second = hubSource(repo, { endpoint: server.endpoint, cache: dirCache(cacheDir) });
    const m2 = await loadModel(second, { chunkBytes: 32_000 }); // same chunk plan -> same cached ranges
    expectSameWeights(m2.weights, want);
    expect(second.stats.networkBytes).toBe(0);
    expect(second.stats.requests).toBe(0);
    expect(server.log.length).toBe(before);
    expect(second.stats.cachedBytes).toBeGreaterThan(0);
    expect(await first.list()).toContain('model.safetensors.index.json');
  });

  it('caches a single-file model too (the missing index.json included)', async () => {
    await writeFiles(join(dir, 'models', 'patchwork/single'), tinyFiles(SMALL));
    const cache = memoryCache();
    const a = hubSource('patchwork/single', { endpoint: server.endpoint, cache });
    await loadModel(a);
    expect(a.stats.requests).toBeGreaterThan(0);
    const b = hubSource('patchwork/single', { endpoint: server.endpoint, cache });
    const m = await loadModel(b);
    expect(b.stats.requests).toBe(0);
    expectSameWeights(m.weights, tinyWeights(tinyConfig(SMALL), SMALL.seed));
  });

  it('works when the server ignores Range, and names HTTP failures', async () => {
    const plain = await serveModelFolders(join(dir, 'models'), { ignoreRange: true });
    try {
      const m = await loadModel(hubSource(repo, { endpoint: plain.endpoint, cache: memoryCache() }));
      expectSameWeights(m.weights, tinyWeights(tinyConfig(opts), opts.seed));
    } finally {
      await plain.close();
    }
    const gated = await serveModelFolders(join(dir, 'models'), { status: () => 401 });
    try {
      await expect(loadModel(hubSource(repo, { endpoint: gated.endpoint, cache: null }))).rejects.toThrow(/hub patchwork\/tiny-sharded@main: config\.json: HTTP 401: the repo is gated or private; pass an access token/);
    } finally {
      await gated.close();
    }
    await expect(hubSource('patchwork/missing', { endpoint: server.endpoint, cache: null }).read('config.json')).rejects.toBeInstanceOf(MissingFileError);
    await expect(hubSource('patchwork/missing', { endpoint: server.endpoint, cache: null }).readRange('model.safetensors', 0, 8)).rejects.toThrow(/not found/);
    expect(() => hubSource('../etc', { endpoint: server.endpoint })).toThrow(/not a hub repo id/);
  });

  it('reports a truncated file as such', async () => {
    const f = tinyFiles({ ...SMALL });
    const st = f['model.safetensors'];
    await writeFiles(join(dir, 'models', 'patchwork/truncated'), { ...f, 'model.safetensors': st.subarray(0, st.byteLength - 10) });
    await expect(loadModel(hubSource('patchwork/truncated', { endpoint: server.endpoint, cache: null }))).rejects.toThrow(/truncated/);
  });
});

describe('tiny source', () => {
  it('is the real-vocabulary tiny model with the tokenizer files', async () => {
    const src = tinySource({ tokenizerJson: async () => new TextEncoder().encode('{"fake": true}') });
    const names = await src.list();
    expect(names).toEqual(expect.arrayContaining(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'preprocessor_config.json', 'generation_config.json']));
    const m = await loadModel(src);
    expect(m.config.text.vocabSize).toBe(151936);
    expect(m.weights['model.embed_tokens.weight'].shape).toEqual([151936, 128]);
    const tc = JSON.parse(new TextDecoder().decode(await src.read('tokenizer_config.json')));
    expect(tc.chat_template).toContain('<|vision_start|><|image_pad|><|vision_end|>');
    expect(tc.added_tokens_decoder['151655'].content).toBe('<|image_pad|>');
  });
});

describe('model folders: symlinks, tokenizer, damaged weights, warnings', () => {
  let tmp: string;
  let tokJson: Uint8Array;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'pw-folders-'));
    tokJson = new Uint8Array(await readFile(qwenTokenizerJsonPath()!));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  /** a Hugging Face cache entry: blobs/<sha256> and snapshots/<rev>/<file> -> ../../blobs/<sha256> */
  async function hfCache(name: string, f: Record<string, Uint8Array>): Promise<string> {
    const repo = join(tmp, name), snap = join(repo, 'snapshots', 'abc123');
    await mkdir(join(repo, 'blobs'), { recursive: true });
    await mkdir(snap, { recursive: true });
    for (const [file, bytes] of Object.entries(f)) {
      const sha = createHash('sha256').update(bytes).digest('hex');
      await writeFile(join(repo, 'blobs', sha), bytes);
      await symlink(`../../blobs/${sha}`, join(snap, file));
    }
    return snap;
  }

  it('loads a Hugging Face cache snapshot whose files are symlinks into blobs/', async () => {
    const snap = await hfCache('cache1', { ...files(), 'tokenizer.json': tokJson });
    const m = await loadModel(await dirSource(snap));
    expectSameWeights(m.weights, tinyWeights(tinyConfig(SMALL), SMALL.seed));
    expect((await (await dirSource(snap)).list()).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json']);
  });

  it('a dangling symlink (interrupted download) is named with its target', async () => {
    const snap = await hfCache('cache2', files());
    const target = (await import('node:fs/promises')).readlink;
    const to = await target(join(snap, 'model.safetensors'));
    await unlink(join(snap, '..', '..', 'blobs', to.split('/').pop()!));
    const src = await dirSource(snap);
    await expect(loadModel(src)).rejects.toThrow(new RegExp(`model\\.safetensors: is a symbolic link to \\.\\./\\.\\./blobs/[0-9a-f]{64}, which does not exist \\(an interrupted Hugging Face download\\?`));
  });

  it('a missing config.json is named', async () => {
    const { 'config.json': _, ...rest } = files();
    await expect(loadModel(memorySource(rest, 'no-config'))).rejects.toThrow(/^no-config: config\.json is missing: a model folder needs config\.json next to its safetensors$/);
  });

  it('tokenizer.json missing from a model folder is an error, not the bundled tokenizer', async () => {
    const m = await loadModel(memorySource(files(), 'my-model'));
    await expect(loadTokenizer(memorySource(files(), 'my-model'), m.config)).rejects.toThrow(
      /^my-model: tokenizer\.json is missing: a model folder needs the tokenizer it was trained with \(the built-in Qwen tokenizer is used only for the built-in tiny model\)/,
    );
  });

  it('tokenizer special ids are cross-checked with config.json, naming both ids', async () => {
    const real = { ...files({ ...SMALL, vocabSize: 151936 }), 'tokenizer.json': tokJson };
    const cfgOf = async (f: Record<string, Uint8Array>) => (await loadModel(memorySource(f))).config;
    const cfg = await cfgOf(real);
    const tok = await loadTokenizer(memorySource(real, 'ok'), cfg);
    expect(tok.special.imagePad).toBe(151655);
    expect(tok.chatTemplate).toBeUndefined(); // no tokenizer_config.json / chat_template.json here
    const bad = { ...cfg, imageTokenId: 151654, visionEndTokenId: 151600 };
    await expect(loadTokenizer(memorySource(real, 'm'), bad)).rejects.toThrow(
      /^m: tokenizer\.json does not match config\.json: <\|image_pad\|> is id 151655 in tokenizer\.json but config\.json image_token_id is 151654; <\|vision_end\|> is id 151653 in tokenizer\.json but config\.json vision_end_token_id is 151600\. Use the tokenizer files that came with this model\.$/,
    );
    await expect(loadTokenizer(memorySource(real, 'm'), { ...cfg, eosTokenIds: [151645, 7] })).rejects.toThrow(/eos_token_id 7 is neither <\|im_end\|> \(id 151645\) nor <\|endoftext\|> \(id 151643\)/);
    await expect(loadTokenizer(memorySource(real, 'm'), { ...cfg, text: { ...cfg.text, vocabSize: 150000 } })).rejects.toThrow(/tokenizer\.json has 151669 tokens but config\.json vocab_size is 150000/);
    // the template comes from chat_template.json when tokenizer_config.json has none
    const withTpl = { ...real, 'chat_template.json': enc({ chat_template: QWEN2_5_VL_CHAT_TEMPLATE }) };
    expect((await loadTokenizer(memorySource(withTpl), cfg)).chatTemplate).toBe(QWEN2_5_VL_CHAT_TEMPLATE);
  });

  for (const [dtype, bad] of [['BF16', NaN], ['F32', Infinity], ['F16', -Infinity]] as const) {
    it(`NaN/Inf in base weights (${dtype}, ${bad}) is found at load, naming every damaged tensor`, async () => {
      const f = files({ ...SMALL, dtype }, {
        weights: (w) => {
          for (const [name, at] of [['model.layers.1.mlp.up_proj.weight', 77], ['visual.blocks.0.norm1.weight', 3]] as const) {
            const bits = w[name].data as Uint16Array;
            bits[at] = bad !== bad ? 0x7fc0 : bad > 0 ? 0x7f80 : 0xff80;
          }
        },
      });
      await expect(loadModel(memorySource(f, 'broken'))).rejects.toThrow(
        /^broken: 2 tensor\(s\) hold NaN\/Inf: "model\.layers\.1\.mlp\.up_proj\.weight" in model\.safetensors \(1 of 40960 values, the first at index 77\); "visual\.blocks\.0\.norm1\.weight" in model\.safetensors \(1 of \d+ values, the first at index 3\)\. The checkpoint is damaged/,
      );
    });
  }

  it('loader warnings come back as a structured list', async () => {
    const extra = await loadModel(memorySource(files(SMALL, { weights: (w) => (w['model.extra_head.weight'] = w['model.norm.weight']) })));
    expect(extra.loadWarnings).toEqual([{ kind: 'unused-tensor', tensor: 'model.extra_head.weight', file: 'model.safetensors', message: 'unused tensor "model.extra_head.weight" in model.safetensors' }]);
    expect(extra.warnings).toEqual(['unused tensor "model.extra_head.weight" in model.safetensors']);
    const tf = await loadModel(memorySource(files({ ...SMALL, layout: 'transformers' })));
    expect(tf.loadWarnings.map((w) => w.kind)).toEqual(['layout']);
    // a shard holding a tensor the index places elsewhere: ignored with a note (as transformers does)
    const sh = files({ ...SMALL, maxShardBytes: 60_000 });
    const idx = JSON.parse(new TextDecoder().decode(sh['model.safetensors.index.json']));
    const shards = Object.keys(sh).filter((k) => k.endsWith('.safetensors')).sort();
    const a = readSafetensors(sh[shards[0]]), b = readSafetensors(sh[shards[1]]);
    const [name, t] = [...a.tensors][0];
    const copy = (st: typeof a) => [...st.tensors.values()].map((x) => ({ name: x.name, dtype: x.dtype, shape: x.shape, data: x.bytes.slice() }));
    const both = { ...sh, [shards[1]]: writeSafetensors([...copy(b), { name, dtype: t.dtype, shape: t.shape, data: t.bytes.slice() }]) };
    expect(idx.weight_map[name]).toBe(shards[0]);
    const m = await loadModel(memorySource(both));
    expect(m.loadWarnings).toEqual([{ kind: 'index-mismatch', tensor: name, file: shards[1], message: `tensor "${name}" in ${shards[1]} is ignored: model.safetensors.index.json places it in ${shards[0]}` }]);
  });

  it('the hub cache sweeps temp files of killed downloads before its first write', async () => {
    const cdir = join(tmp, 'hubcache');
    await mkdir(cdir, { recursive: true });
    const { spawn } = await import('node:child_process');
    const gone = spawn(process.execPath, ['-e', '0']);
    await new Promise((ok) => gone.on('exit', ok));
    await writeFile(join(cdir, `abc.${gone.pid}.x1y2.tmp`), new Uint8Array(5));
    await writeFile(join(cdir, `def.${process.pid}.x1y2.tmp`), new Uint8Array(5)); // ours: may be in flight
    const c = dirCache(cdir);
    await c.put('https://x/y', new Uint8Array([1, 2]));
    const { readdir } = await import('node:fs/promises');
    expect((await readdir(cdir)).filter((f) => f.endsWith('.tmp'))).toEqual([`def.${process.pid}.x1y2.tmp`]);
    expect(Array.from((await c.get('https://x/y'))!)).toEqual([1, 2]);
  });

  it('the tiny model folder carries chat_template.json as Qwen2.5-VL checkpoints do, and tokenizer.json', async () => {
    const dir = join(tmp, 'tinyfolder');
    const names = await writeTinyModelFolder(dir, { ...SMALL, vocabSize: 151936 });
    expect(names).toEqual(expect.arrayContaining(['chat_template.json', 'tokenizer.json', 'tokenizer_config.json', 'config.json']));
    const ct = JSON.parse(await readFile(join(dir, 'chat_template.json'), 'utf8'));
    expect(Object.keys(ct)).toEqual(['chat_template']);
    expect(ct.chat_template).toBe(QWEN2_5_VL_CHAT_TEMPLATE);
    const src = await dirSource(dir);
    const tok = await loadTokenizer(src, (await loadModel(src)).config);
    expect(tok.chatTemplate).toBe(QWEN2_5_VL_CHAT_TEMPLATE);
  });
});
