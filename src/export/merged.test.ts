// The merged-model export: weights are W + scaling·B·A rounded once to BF16, the folder is what
// transformers' save_pretrained writes (index compared with a fixture transformers made, see
// scripts/merged_check.py), shards split as huggingface_hub splits them, and the folder reloaded
// with our own loader (no adapter) scores like base + adapter within BF16 rounding.
import { mkdtemp, readFile, readdir, rm, lstat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { bf16ToF32, f32ToBf16Bits } from '../gpu/bf16.ts';
import { Rng } from '../base/rng.ts';
import { dirSource } from '../model/sources/node.ts';
import { memorySource, type ModelSource } from '../model/sources/source.ts';
import { loadModel, type LoadedModel } from '../model/weights.ts';
import { initLora, saveAdapter, targetRegex, TEXT_LORA_MODULES, VISION_LORA_MODULES, type LoraAdapter, type LoraConfig } from '../model/lora.ts';
import { readSafetensors } from '../model/safetensors.ts';
import type { SeqInput } from '../model/qwen2_5_vl.ts';
import { tinyFiles } from '../model/tiny.ts';
import { GoldenCase } from '../parity/golden.ts';
import { describeParity, mergedParity } from './mergedParity.ts';
import { adapterFromPeftFiles, exportMerged, mergeLinear, parseShardSize, splitShards, type MergedOptions, type MergedSink } from './merged.ts';
import { writeFolderAtomic, writeStreamDurable } from '../cli/files.ts';
import { mergeCli } from '../cli/merge.ts';
import fixtureIndex from './fixtures/merged/golden-tiny.index.50KB.json';

const root = resolve(__dirname, '../../../shared/golden');
const TOKENIZER = new TextEncoder().encode('{"stand-in": "tokenizer.json, copied byte for byte"}\n');
let base: ModelSource, ref: LoadedModel, seq: SeqInput;

beforeAll(async () => {
  await nodeGpu();
  base = await dirSource(`${root}/tiny-qwen2_5_vl`);
  ref = await loadModel(base);
  const c = new GoldenCase(`${root}/cases/lora_sft__one_image.safetensors`, root);
  seq = { inputIds: c.i32('input.input_ids'), images: { pixelValues: c.f32('input.pixel_values'), imageGridThw: c.i32('input.image_grid_thw') }, scoreStart: 20 };
});
afterAll(async () => {
  await closeGpu();
});

const loraCfg = (over: Partial<LoraConfig> = {}): LoraConfig => ({ r: 3, loraAlpha: 6, loraDropout: 0, targetModules: targetRegex(TEXT_LORA_MODULES, VISION_LORA_MODULES), useRslora: false, ...over });

/** peft's init with B filled (B = 0, as peft starts, would merge to the base unchanged), through our own peft files. */
function trainedAdapter(cfg: LoraConfig, seed: number): LoraAdapter {
  const a = initLora(ref.config, cfg, seed);
  const rng = new Rng(seed + 1);
  for (const m of a.modules.values()) for (let i = 0; i < m.B.length; i++) m.B[i] = rng.uniform(-0.3, 0.3);
  const f = saveAdapter(a);
  return adapterFromPeftFiles(f as unknown as Record<string, Uint8Array>, ref.config);
}

/** An in-memory sink that checks each stream adds up to the size announced. */
function memorySink(): MergedSink & { files: Map<string, Uint8Array>; order: string[] } {
  const files = new Map<string, Uint8Array>(), order: string[] = [];
  return {
    files, order,
    async writeFile(name, size, chunks) {
      const parts: Uint8Array[] = [];
      for await (const c of chunks) parts.push(c.slice());
      const out = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0));
      let o = 0;
      for (const p of parts) (out.set(p, o), (o += p.byteLength));
      expect(out.byteLength, name).toBe(size);
      files.set(name, out);
      order.push(name);
    },
  };
}

async function merge(adapter: LoraAdapter, opts: MergedOptions = {}, src: ModelSource = base) {
  const sink = memorySink();
  const summary = await exportMerged(src, adapter, sink, { extraFiles: { 'tokenizer.json': TOKENIZER }, ...opts });
  return { sink, summary, source: memorySource(Object.fromEntries(sink.files), 'merged') };
}

describe('merge arithmetic', () => {
  it('every merged weight is RNE_bf16(W + scaling·B·A) (f64 reference), every other tensor is the base bit for bit', async () => {
    for (const cfg of [loraCfg(), loraCfg({ useRslora: true, r: 4, loraAlpha: 3 })]) {
      const a = trainedAdapter(cfg, 5);
      const { source, summary } = await merge(a, { chunkBytes: 999 }); // copied tensors in 998-byte pieces
      expect(summary.merged).toBe(a.modules.size);
      const got = await loadModel(source);
      let off = 0, n = 0;
      for (const [name, w] of Object.entries(ref.weights)) {
        const m = a.modules.get(name.replace(/\.weight$/, ''));
        const out = got.weights[name].data as Uint16Array;
        if (!m) {
          expect(Array.from(out), name).toEqual(Array.from(w.data as Uint16Array));
          continue;
        }
        expect(m.scaling).toBe(cfg.useRslora ? cfg.loraAlpha / Math.sqrt(cfg.r) : cfg.loraAlpha / cfg.r);
        const W = bf16ToF32(w.data as Uint16Array);
        for (let o = 0; o < m.outFeatures; o++) {
          for (let i = 0; i < m.inFeatures; i++) {
            let d = 0;
            for (let k = 0; k < m.r; k++) d += m.B[o * m.r + k] * m.A[k * m.inFeatures + i];
            const want = f32ToBf16Bits(W[o * m.inFeatures + i] + m.scaling * d);
            const g = out[o * m.inFeatures + i];
            n++;
            // f32 steps (as peft) vs one f64 rounding can differ by one ulp at a near-tie
            if (g !== want) {
              expect(Math.abs(g - want), `${name}[${o},${i}]`).toBe(1);
              off++;
            }
          }
        }
      }
      expect(off / n).toBeLessThan(0.01);
    }
  });

  it('mergeLinear adds scaling·B@A to a [out, in] weight (orientation of peft: B [out, r], A [r, in])', () => {
    const w = new Float32Array([1, 2, 3, 4, 5, 6]); // [2, 3]
    const A = new Float32Array([1, 0, 2]); // [1, 3]
    const B = new Float32Array([0.5, -1]); // [2, 1]
    const bits = mergeLinear(w, { A, B, r: 1, inFeatures: 3, outFeatures: 2, scaling: 2 });
    expect(Array.from(w)).toEqual([2, 2, 5, 2, 5, 2]);
    expect(Array.from(bf16ToF32(bits))).toEqual([2, 2, 5, 2, 5, 2]);
  });
});

describe('folder layout', () => {
  it('shards, index and names are what transformers save_pretrained(max_shard_size="50KB") writes for this model', async () => {
    const { sink, summary } = await merge(trainedAdapter(loraCfg(), 1), { maxShardSize: '50KB' });
    const index = JSON.parse(new TextDecoder().decode(sink.files.get('model.safetensors.index.json')!));
    // the fixture is transformers 5.18's own index (scripts/merged_check.py --save-index)
    expect(index).toEqual(fixtureIndex);
    expect(sink.files.get('model.safetensors.index.json')!.byteLength).toBe(JSON.stringify(fixtureIndex, null, 2).length + 1);
    const shards = [...sink.files.keys()].filter((f) => f.endsWith('.safetensors')).sort();
    expect(shards.length).toBeGreaterThan(2);
    expect(shards.every((f, i) => f === `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`)).toBe(true);
    let total = 0;
    for (const f of shards) {
      const st = readSafetensors(sink.files.get(f)!, f);
      expect(st.metadata).toEqual({ format: 'pt' });
      const names = [...st.tensors.keys()];
      expect(names).toEqual(Object.keys(index.weight_map).filter((k) => index.weight_map[k] === f)); // sorted, and where the index says
      let bytes = 0;
      for (const t of st.tensors.values()) {
        expect(t.dtype).toBe('BF16');
        bytes += t.bytes.byteLength;
      }
      // a shard stays under the limit unless it is one tensor bigger than the limit
      expect(bytes <= parseShardSize('50KB') || names.length === 1).toBe(true);
      total += bytes;
    }
    expect(index.metadata.total_size).toBe(total);
    expect(summary.totalSize).toBe(total);
    // tied embeddings: no lm_head, as save_pretrained drops the tied copy
    expect(Object.keys(index.weight_map)).not.toContain('lm_head.weight');
    // the published layout stays the published layout (transformers 5 reverts its renaming on save)
    expect(Object.keys(index.weight_map).some((k) => k.startsWith('model.language_model.'))).toBe(false);
    // shards first, the index, config.json last: a folder cut short does not look like a model
    expect(sink.order.slice(0, shards.length)).toEqual(shards);
    expect(sink.order.at(-1)).toBe('config.json');
    expect(sink.order.at(-2)).toBe('model.safetensors.index.json');
    expect(sink.files.get('tokenizer.json')).toEqual(TOKENIZER);
    for (const f of ['chat_template.json', 'preprocessor_config.json']) expect(sink.files.has(f), f).toBe(true);
    expect(JSON.parse(new TextDecoder().decode(sink.files.get('config.json')!)).torch_dtype).toBe('bfloat16');
  });

  it('one model.safetensors and no index when it fits in one shard; huggingface_hub puts an oversized tensor in its own shard at once', async () => {
    const { sink } = await merge(trainedAdapter(loraCfg(), 1));
    expect([...sink.files.keys()].filter((f) => f.includes('safetensors'))).toEqual(['model.safetensors']);
    const t = (name: string, bytes: number) => ({ name, bytes });
    // [6, 6, 2, 6, 2, 2] GB at 10 GB → [6], [6+2], [6+2+2] (huggingface_hub's docstring); 12 > 10 alone, placed before the open shard
    expect(splitShards([t('a', 6), t('b', 6), t('c', 2), t('d', 6), t('e', 2), t('f', 2)], 10).map((s) => s.map((x) => x.name).join(''))).toEqual(['a', 'bc', 'def']);
    expect(splitShards([t('a', 3), t('b', 12), t('c', 3)], 10).map((s) => s.map((x) => x.name).join(''))).toEqual(['b', 'ac']);
    expect(parseShardSize('5GB')).toBe(5e9);
    expect(parseShardSize(' 1.5 mb')).toBe(1.5e6);
    expect(() => parseShardSize('5GiB')).toThrow(/KB, MB, GB, TB/);
  });

  it('a ≥ 4.52-layout, untied, F32 base: names stay model.language_model.* / model.visual.*, lm_head is written, F32 is rounded to BF16', async () => {
    const opts = { vocabSize: 256, layout: 'transformers' as const, dtype: 'F32' as const, seed: 3 };
    const src = memorySource(tinyFiles(opts), 'tiny f32');
    const cfg = (await loadModel(src, { keep: false })).config;
    const a = initLora(cfg, loraCfg({ targetModules: targetRegex(['q_proj', 'down_proj'], []) }), 2);
    for (const m of a.modules.values()) m.B.fill(0.01);
    const { sink } = await merge(a, { chunkBytes: 1000 }, src); // converted in 250-value pieces
    const st = readSafetensors(sink.files.get('model.safetensors')!);
    const names = [...st.tensors.keys()];
    expect(names).toContain('lm_head.weight');
    expect(names).toContain('model.language_model.layers.0.self_attn.q_proj.weight');
    expect(names).toContain('model.visual.blocks.0.attn.qkv.weight');
    expect(names.every((n) => n === 'lm_head.weight' || n.startsWith('model.language_model.') || n.startsWith('model.visual.'))).toBe(true);
    expect(names).toEqual([...names].sort());
    const f32 = readSafetensors(tinyFiles(opts)['model.safetensors']);
    for (const name of ['model.language_model.norm.weight', 'lm_head.weight']) {
      const x = new Float32Array(f32.tensors.get(name)!.bytes.slice().buffer);
      const got = new Uint16Array(st.tensors.get(name)!.bytes.slice().buffer);
      expect(Array.from(got).every((b, i) => b === f32ToBf16Bits(x[i])), name).toBe(true);
    }
  });

  it('refuses, before writing anything, an adapter of another model and a quantised base, naming every problem', async () => {
    const other = initLora((await loadModel(memorySource(tinyFiles({ vocabSize: 256 })), { keep: false })).config, loraCfg({ targetModules: targetRegex(['q_proj', 'o_proj'], []) }));
    const sink = memorySink();
    const err = await exportMerged(base, other, sink, { extraFiles: { 'tokenizer.json': TOKENIZER } }).catch((e: Error) => e);
    expect(String(err)).toMatch(/model\.layers\.0\.self_attn\.q_proj.*another model/s);
    expect(String(err)).toMatch(/model\.layers\.1\.self_attn\.o_proj/);
    const noTok = await exportMerged(base, trainedAdapter(loraCfg(), 1), sink).catch((e: Error) => e);
    expect(String(noTok)).toMatch(/tokenizer\.json is missing/);
    const cfg = JSON.parse(new TextDecoder().decode(await base.read('config.json')));
    const q = memorySource({ 'config.json': new TextEncoder().encode(JSON.stringify({ ...cfg, quantization_config: { load_in_4bit: true } })), 'model.safetensors': await base.read('model.safetensors') });
    expect(String(await exportMerged(q, trainedAdapter(loraCfg(), 1), sink, { extraFiles: { 'tokenizer.json': TOKENIZER } }).catch((e: Error) => e))).toMatch(/full-precision/);
    expect(sink.order).toEqual([]);
  });
});

describe('reloaded with our loader', () => {
  it('log-probs of the merged model (no adapter) equal base + adapter within BF16 rounding', async () => {
    const a = trainedAdapter(loraCfg(), 9);
    const { source } = await merge(a, { maxShardSize: '50KB' });
    // export/mergedParity.ts: the CPU reference three ways and our GPU model, merged vs base + adapter
    const p = await mergedParity(base, source, a, seq);
    console.log(describeParity(p));
    expect(p.f32Gap).toBeLessThan(1e-4);
    expect(p.gap).toBeLessThan(p.tol);
    expect(p.effect).toBeGreaterThan(20 * p.tol);
    expect(p.rounding).toBeGreaterThan(0); // the rounding is real: the merged folder is BF16
  });
});

describe('CLI', () => {
  it('npm run merge writes the folder atomically; a crash mid-export leaves nothing that looks complete', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'merged-'));
    try {
      const { writeFiles } = await import('../model/sources/node.ts');
      const baseDir = join(dir, 'base');
      await writeFiles(baseDir, { 'config.json': await base.read('config.json'), 'model.safetensors': await base.read('model.safetensors'), 'tokenizer.json': TOKENIZER });
      const a = trainedAdapter(loraCfg(), 4);
      await writeFiles(join(dir, 'adapter'), saveAdapter({ ...a, config: { ...a.config, baseModelNameOrPath: baseDir } }) as unknown as Record<string, Uint8Array>);
      const lines: string[] = [];
      const io = { log: (l: string) => lines.push(l), error: (l: string) => lines.push(l) };
      const out = join(dir, 'merged');
      // --model defaults to the adapter's base_model_name_or_path
      expect(await mergeCli(['--adapter', join(dir, 'adapter'), '--out', out, '--max-shard-size', '50KB'], io)).toBe(0);
      expect(lines.join('\n')).toMatch(/merged 36 of 80 tensors/);
      const files = (await readdir(out)).sort();
      expect(files).toContain('model.safetensors.index.json');
      expect(files).toContain('config.json');
      const again = await loadModel(await dirSource(out));
      const mem = await merge(a, { maxShardSize: '50KB' });
      expect(Object.keys(again.weights).sort()).toEqual(Object.keys((await loadModel(mem.source)).weights).sort());
      for (const f of mem.sink.files.keys()) expect(new Uint8Array(await readFile(join(out, f))), f).toEqual(mem.sink.files.get(f));

      // a kill mid-export (here: a throw while the third shard streams): the old export stays, whole
      let n = 0;
      const crash = writeFolderAtomic(out, async (vdir) => {
        await exportMerged(await dirSource(baseDir), a, {
          async writeFile(name, _size, chunks) {
            if (++n === 3) throw new Error('killed');
            await writeStreamDurable(join(vdir, name), chunks);
          },
        }, { maxShardSize: '50KB' });
      });
      await expect(crash).rejects.toThrow('killed');
      expect((await readdir(out)).sort()).toEqual(files);
      expect((await readdir(dir)).filter((f) => f.startsWith('.merged.v-')).length).toBe(1); // the half version is gone
      expect((await lstat(out)).isSymbolicLink()).toBe(true);

      // the same base from the hub (a local stand-in), read by ranges: the same folder, byte for byte
      const { serveModelFolders } = await import('../model/sources/node.ts');
      const { hubSource } = await import('../model/sources/hub.ts');
      const { memoryCache } = await import('../model/sources/cache.ts');
      await writeFiles(join(dir, 'hub', 'test', 'tiny'), { 'config.json': await base.read('config.json'), 'model.safetensors': await base.read('model.safetensors'), 'tokenizer.json': TOKENIZER });
      const server = await serveModelFolders(join(dir, 'hub'));
      try {
        const viaHub = memorySink();
        await exportMerged(hubSource('test/tiny', { endpoint: server.endpoint, cache: memoryCache() }), a, viaHub, { maxShardSize: '50KB' });
        expect([...viaHub.files.keys()]).toEqual([...mem.sink.files.keys()]);
        for (const [f, b] of viaHub.files) expect(Buffer.from(b).equals(Buffer.from(mem.sink.files.get(f)!)), f).toBe(true);
        expect(server.log.some((r) => r.range)).toBe(true); // tensors by range, not the whole file
      } finally {
        await server.close();
      }

      // refusals: all problems at once, nothing of the user's overwritten
      const bad = await mergeCli(['--adapter', join(dir, 'nope'), '--out', baseDir, '--max-shard-size', '5GiB'], io).catch((e: Error) => e.message);
      expect(bad).toMatch(/adapter_config\.json is missing/);
      expect(bad).toMatch(/--max-shard-size/);
      expect(bad).toMatch(/exists and is not an earlier merge export/);
      // a link of the user's (not to one of our version folders) is not followed and replaced either
      const { symlink } = await import('node:fs/promises');
      await symlink(baseDir, join(dir, 'elsewhere'));
      const viaLink = await mergeCli(['--adapter', join(dir, 'adapter'), '--out', join(dir, 'elsewhere')], io).catch((e: Error) => e.message);
      expect(viaLink).toMatch(/exists and is not an earlier merge export/);
      // an earlier export is replaced
      expect(await mergeCli(['--adapter', join(dir, 'adapter'), '--out', out], io)).toBe(0);
      expect((await readdir(out)).filter((f) => f.includes('safetensors'))).toEqual(['model.safetensors']);
      expect((await readdir(dir)).filter((f) => f.startsWith('.merged.v-')).length).toBe(1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
