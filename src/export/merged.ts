// Merged-model export: the LoRA folded into the base weights, written as the Hugging Face folder
// transformers' Qwen2_5_VLForConditionalGeneration.save_pretrained writes (checked against
// transformers 5.18 by scripts/merged_check.py):
//   - tensor names in the base's own layout (5.x reverts its key renaming on save, so a published
//     `model.layers.*` / `visual.*` checkpoint stays in that layout, a ≥ 4.52 one in
//     `model.language_model.*` / `model.visual.*`); `lm_head.weight` only when not tied;
//   - every tensor BF16; names sorted; huggingface_hub's split_torch_state_dict_into_shards (in name
//     order; a tensor over the limit gets its own shard at once); `model.safetensors` when it all
//     fits, else `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`
//     ({metadata: {total_parameters, total_size}, weight_map}, sort_keys, indent 2);
//   - config.json, generation_config.json, tokenizer and processor files copied from the base.
// The merge is peft's merge_and_unload: W' = W + scaling·(B @ A), scaling = lora_alpha / r
// (rsLoRA: lora_alpha / √r), in f32 from the BF16 base, rounded to BF16 to nearest even as
// torch's .to(torch.bfloat16). Streamed: one base tensor is read, merged, written and dropped at
// a time; a shard's header is known up front (shapes come from the base headers), so a shard is
// written as a stream of tensors and never held whole.
import { f32ToBf16 } from '../gpu/bf16.ts';
import { parseConfig, type QwenVLConfig } from '../model/config.ts';
import { parseAdapter, type LoraAdapter, type LoraModule } from '../model/lora.ts';
import { DTYPE_BYTES, bytesToF32, safetensorsHeader, type StDType } from '../model/safetensors.ts';
import { MissingFileError, type ModelSource } from '../model/sources/source.ts';
import { expectedWeights, layoutName, readHeader, shardPlan, canonicalName, WeightsError, type StTensorInfo, type TensorLayout } from '../model/weights.ts';
import { QWEN2_5_VL_CHAT_TEMPLATE, qwenPreprocessorConfig } from '../model/tiny.ts';

export { DEFAULT_MAX_SHARD_SIZE, parseShardSize } from './shardSize.ts';
import { DEFAULT_MAX_SHARD_SIZE, parseShardSize } from './shardSize.ts';

/** Files besides the weights, copied from the base folder when it has them (save_pretrained + processor.save_pretrained). */
export const COPIED_FILES = [
  'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json', 'merges.txt', 'special_tokens_map.json',
  'added_tokens.json', 'chat_template.json', 'chat_template.jinja', 'preprocessor_config.json', 'video_preprocessor_config.json', 'processor_config.json',
] as const;

/** Where the merged files go: one file at a time, as a stream of chunks whose sizes add up to `size`. */
export interface MergedSink {
  writeFile(name: string, size: number, chunks: AsyncIterable<Uint8Array>): Promise<void>;
}

export interface MergedProgress {
  /** the file being written */
  file: string;
  /** the tensor just merged (shards only) */
  tensor?: string;
  /** bytes written so far, of all files */
  bytes: number;
  total: number;
  filesDone: number;
  files: number;
}

export interface MergedOptions {
  /** per shard (default DEFAULT_MAX_SHARD_SIZE) */
  maxShardSize?: string | number;
  /** files the base source lacks but the folder needs (the built-in tiny model's tokenizer.json) */
  extraFiles?: Record<string, Uint8Array>;
  onProgress?(p: MergedProgress): void;
  signal?: AbortSignal;
  /** largest read of a tensor that is copied, not merged (default 64 MiB) */
  chunkBytes?: number;
}

export interface MergedFile {
  name: string;
  size: number;
}

export interface MergedSummary {
  /** in the order written (weights first, config.json last) */
  files: MergedFile[];
  layout: TensorLayout;
  tensors: number;
  /** tensors that got B·A added */
  merged: number;
  totalSize: number;
  totalParameters: number;
  /** what the user should know (e.g. a default preprocessor_config.json) */
  notes: string[];
}

const enc = (s: string) => new TextEncoder().encode(s);
const CHUNK = 64 << 20;
const json = (o: unknown) => enc(JSON.stringify(o, null, 2) + '\n');

/** peft files (adapter_config.json + adapter_model.safetensors, either key layout) → the adapter, checked against the model. */
export function adapterFromPeftFiles(files: { name: string; bytes: Uint8Array }[] | Record<string, Uint8Array>, cfg: QwenVLConfig, where = 'adapter'): LoraAdapter {
  const by = Array.isArray(files) ? Object.fromEntries(files.map((f) => [f.name.split('/').pop()!, f.bytes])) : files;
  const c = by['adapter_config.json'], st = by['adapter_model.safetensors'];
  if (!c || !st) throw new Error(`${where}: a peft adapter is adapter_config.json + adapter_model.safetensors; got ${Object.keys(by).join(', ') || 'no files'}`);
  return parseAdapter(new TextDecoder().decode(c), st, cfg, where);
}

/**
 * W + scaling·(B @ A) for one module, W as f32 [out, in] (changed in place and returned as BF16
 * bits). The dot over r is summed in f64 and rounded to f32 (at least as exact as torch's f32
 * GEMM), scaled and added in f32 as peft's `weight += delta`, then rounded to BF16.
 */
export function mergeLinear(w: Float32Array, m: Pick<LoraModule, 'A' | 'B' | 'r' | 'inFeatures' | 'outFeatures' | 'scaling'>): Uint16Array {
  const { A, B, r, inFeatures: n, outFeatures: o, scaling } = m;
  if (w.length !== n * o) throw new Error(`mergeLinear: weight has ${w.length} values, [${o}, ${n}] needs ${n * o}`);
  const acc = new Float64Array(n);
  const s = Math.fround(scaling);
  for (let i = 0; i < o; i++) {
    acc.fill(0);
    let k = 0;
    // four ranks per pass over the row: a quarter of the accumulator traffic
    for (; k + 4 <= r; k += 4) {
      const b0 = B[i * r + k], b1 = B[i * r + k + 1], b2 = B[i * r + k + 2], b3 = B[i * r + k + 3];
      const r0 = k * n, r1 = r0 + n, r2 = r1 + n, r3 = r2 + n;
      for (let j = 0; j < n; j++) acc[j] += b0 * A[r0 + j] + b1 * A[r1 + j] + b2 * A[r2 + j] + b3 * A[r3 + j];
    }
    for (; k < r; k++) {
      const b = B[i * r + k], row = k * n;
      for (let j = 0; j < n; j++) acc[j] += b * A[row + j];
    }
    const base = i * n;
    for (let j = 0; j < n; j++) w[base + j] = Math.fround(w[base + j] + Math.fround(Math.fround(acc[j]) * s));
  }
  return f32ToBf16(w);
}

interface OutTensor {
  /** name as written (the base's layout) */
  name: string;
  canonical: string;
  shape: number[];
  bytes: number;
  file: string;
  info: StTensorInfo;
}

/** huggingface_hub's split_torch_state_dict_into_shards over tensors in name order. */
export function splitShards<T extends { name: string; bytes: number }>(tensors: T[], max: number): T[][] {
  const shards: T[][] = [];
  let cur: T[] = [], size = 0;
  for (const t of tensors) {
    if (t.bytes > max) {
      shards.push([t]); // its own shard, placed now (before the one being filled), as huggingface_hub does
      continue;
    }
    if (size + t.bytes > max) {
      shards.push(cur);
      cur = [];
      size = 0;
    }
    cur.push(t);
    size += t.bytes;
  }
  if (cur.length) shards.push(cur);
  return shards;
}

const shardName = (i: number, n: number) => `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;

/**
 * Merge `adapter` into the weights of `base` and write the whole folder to `sink`. Everything is
 * checked before the first byte is written (config, tensor shapes and dtypes, adapter modules,
 * tokenizer files); shards go first, then the small files, config.json last, so a folder cut
 * short by a crash never has the file that makes it look like a model.
 */
export async function exportMerged(base: ModelSource, adapter: LoraAdapter, sink: MergedSink, opts: MergedOptions = {}): Promise<MergedSummary> {
  const max = parseShardSize(opts.maxShardSize ?? DEFAULT_MAX_SHARD_SIZE);
  const notes: string[] = [];
  const problems: string[] = [];
  const read = async (f: string): Promise<Uint8Array | undefined> => {
    if (opts.extraFiles?.[f]) return opts.extraFiles[f];
    try {
      return await base.read(f);
    } catch (e) {
      if (e instanceof MissingFileError) return undefined;
      throw e;
    }
  };

  // ---- config.json
  const cfgBytes = await read('config.json');
  if (!cfgBytes) throw new WeightsError(base.id, 'config.json is missing: the base model folder needs config.json next to its safetensors');
  const cfgJson = JSON.parse(new TextDecoder().decode(cfgBytes)) as Record<string, unknown>;
  if (cfgJson.quantization_config) {
    throw new WeightsError(`${base.id}: config.json`, 'is a quantised (bitsandbytes) checkpoint: a merged model is the LoRA added to the full-precision weights. Export from the full-precision base (for "…-bnb-4bit" repos, the same name without the suffix)');
  }
  const cfg = parseConfig(cfgJson, `${base.id}: config.json`);
  // BF16 is what we write; transformers' dtype "auto" reads torch_dtype (4.x) / dtype (5.x)
  if ('dtype' in cfgJson) cfgJson.dtype = 'bfloat16';
  else cfgJson.torch_dtype = 'bfloat16';

  // ---- adapter against this model
  const byModule = new Map<string, LoraModule>();
  const expected = expectedWeights(cfg);
  for (const [name, m] of adapter.modules) {
    const w = expected.get(`${name}.weight`);
    if (!w || w[0] !== m.outFeatures || w[1] !== m.inFeatures) problems.push(`adapter module "${name}" (${m.outFeatures}×${m.inFeatures}) is not a linear layer of this base model${w ? ` (it is ${w[0]}×${w[1]})` : ''}: was the adapter trained on another model?`);
    else if (m.A.length !== m.r * m.inFeatures || m.B.length !== m.outFeatures * m.r) problems.push(`adapter module "${name}": lora_A/lora_B sizes do not match r=${m.r}`);
    byModule.set(`${name}.weight`, m);
  }

  // ---- base tensors: headers, checked against config.json
  const plan = await shardPlan(base);
  const located = new Map<string, { file: string; info: StTensorInfo }>();
  let tfNames = 0;
  for (const file of plan.files) {
    const h = await readHeader(base, file);
    for (const [name, info] of h.tensors) {
      if (plan.index && plan.index.get(name) !== file) continue; // ignored as the loader and transformers do
      if (name.startsWith('model.language_model.') || name.startsWith('model.visual.')) tfNames++;
      const canonical = canonicalName(name), prev = located.get(canonical);
      if (prev) problems.push(`${file}: tensor "${name}" duplicates "${prev.info.name}" in ${prev.file} (both name layouts present?)`);
      located.set(canonical, { file, info });
    }
  }
  const layout: TensorLayout = tfNames > 0 ? 'transformers' : 'hub';
  const out: OutTensor[] = [];
  for (const [canonical, shape] of expected) {
    const loc = located.get(canonical);
    if (!loc) {
      problems.push(`tensor "${layoutName(canonical, layout)}" is missing from ${base.id}`);
      continue;
    }
    const { info } = loc;
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) problems.push(`${loc.file}: tensor "${info.name}" has shape [${info.shape}] but config.json implies [${shape}]`);
    if (info.dtype !== 'BF16' && info.dtype !== 'F16' && info.dtype !== 'F32') problems.push(`${loc.file}: tensor "${info.name}" has dtype ${info.dtype}; a full-precision base is BF16, F16 or F32`);
    const numel = shape.reduce((a, b) => a * b, 1);
    out.push({ name: layoutName(canonical, layout), canonical, shape, bytes: numel * 2, file: loc.file, info });
  }
  const unused = [...located.keys()].filter((n) => !expected.has(n));
  if (unused.length) notes.push(`not written (the architecture does not use them${cfg.text.tieWordEmbeddings && unused.includes('lm_head.weight') ? '; lm_head is tied to the embedding' : ''}): ${unused.map((n) => layoutName(n, layout)).join(', ')}`);

  // ---- the other files
  const small: { name: string; bytes: Uint8Array }[] = [];
  for (const f of COPIED_FILES) {
    const b = await read(f);
    if (b) small.push({ name: f, bytes: b });
  }
  const has = (f: string) => small.some((s) => s.name === f);
  if (!has('tokenizer.json')) problems.push(`tokenizer.json is missing from ${base.id}: the merged folder would not load without its tokenizer`);
  if (!has('chat_template.json') && !has('chat_template.jinja')) {
    const tc = small.find((s) => s.name === 'tokenizer_config.json');
    const tmpl = tc ? (JSON.parse(new TextDecoder().decode(tc.bytes)) as { chat_template?: unknown }).chat_template : undefined;
    if (typeof tmpl === 'string') small.push({ name: 'chat_template.json', bytes: json({ chat_template: tmpl }) });
    else {
      small.push({ name: 'chat_template.json', bytes: json({ chat_template: QWEN2_5_VL_CHAT_TEMPLATE }) });
      notes.push("the base has no chat template (chat_template.json / tokenizer_config.json): Qwen2.5-VL-Instruct's is written");
    }
  }
  if (!has('tokenizer_config.json')) notes.push('the base has no tokenizer_config.json: none written (transformers falls back to tokenizer.json alone)');
  if (!has('preprocessor_config.json')) {
    small.push({ name: 'preprocessor_config.json', bytes: json(qwenPreprocessorConfig()) });
    notes.push("the base has no preprocessor_config.json: Qwen2.5-VL's published one is written");
  }
  small.push({ name: 'config.json', bytes: json(cfgJson) });
  if (problems.length) throw new Error(`cannot export the merged model:\n  - ${problems.join('\n  - ')}`);

  // ---- shard plan and index
  out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const shards = splitShards(out, max);
  const totalSize = out.reduce((a, t) => a + t.bytes, 0);
  const totalParameters = totalSize / 2;
  const shardFiles = shards.map((s, i) => ({ name: shards.length === 1 ? 'model.safetensors' : shardName(i, shards.length), tensors: s }));
  if (shards.length > 1) {
    const weightMap: Record<string, string> = {};
    for (const f of shardFiles) for (const t of f.tensors) weightMap[t.name] = f.name;
    const sorted = Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]]));
    // before config.json: the index is what makes the shards a model
    small.splice(small.length - 1, 0, { name: 'model.safetensors.index.json', bytes: json({ metadata: { total_parameters: totalParameters, total_size: totalSize }, weight_map: sorted }) });
  }
  const headers = shardFiles.map((f) => safetensorsHeader(f.tensors.map((t) => ({ name: t.name, dtype: 'BF16' as StDType, shape: t.shape })), { format: 'pt' }));
  const files: MergedFile[] = [
    ...shardFiles.map((f, i) => ({ name: f.name, size: headers[i].byteLength + f.tensors.reduce((a, t) => a + t.bytes, 0) })),
    ...small.map((s) => ({ name: s.name, size: s.bytes.byteLength })),
  ];
  const total = files.reduce((a, f) => a + f.size, 0);
  let done = 0, filesDone = 0, mergedCount = 0;
  const progress = (file: string, tensor?: string) => opts.onProgress?.({ file, tensor, bytes: done, total, filesDone, files: files.length });

  // ---- write
  for (let i = 0; i < shardFiles.length; i++) {
    const f = shardFiles[i];
    const header = headers[i];
    async function* chunks(): AsyncIterable<Uint8Array> {
      yield header;
      done += header.byteLength;
      for (const t of f.tensors) {
        const m = byModule.get(t.canonical);
        // a LoRA target is merged whole; any other tensor (the 0.6 GB embedding of a 3B model) is
        // copied or converted in pieces of at most CHUNK bytes, so no read is larger than that
        const size = DTYPE_BYTES[t.info.dtype];
        const step = m ? t.info.end - t.info.begin : Math.max(size, Math.floor((opts.chunkBytes ?? CHUNK) / size) * size);
        for (let at = t.info.begin; at < t.info.end; at += step) {
          opts.signal?.throwIfAborted();
          const end = Math.min(at + step, t.info.end);
          const raw = await base.readRange(t.file, at, end);
          if (raw.byteLength !== end - at) throw new WeightsError(`${base.id}: ${t.file}`, `read ${raw.byteLength} bytes of tensor "${t.info.name}" at ${at}, expected ${end - at} (truncated?)`);
          let bits: Uint8Array;
          if (m) bits = u8(mergeLinear(bytesToF32(raw, t.info.dtype), m));
          else if (t.info.dtype === 'BF16') bits = raw;
          else bits = u8(f32ToBf16(bytesToF32(raw, t.info.dtype)));
          yield bits;
          done += bits.byteLength;
        }
        if (m) mergedCount++;
        progress(f.name, t.name);
      }
    }
    progress(f.name);
    await sink.writeFile(f.name, files[i].size, chunks());
    filesDone++;
  }
  for (const s of small) {
    opts.signal?.throwIfAborted();
    progress(s.name);
    await sink.writeFile(s.name, s.bytes.byteLength, (async function* () {
      yield s.bytes;
    })());
    done += s.bytes.byteLength;
    filesDone++;
  }
  progress('');
  if (mergedCount !== byModule.size) throw new Error(`merged ${mergedCount} of the adapter's ${byModule.size} modules (internal error)`);
  return { files, layout, tensors: out.length, merged: mergedCount, totalSize, totalParameters, notes };
}

const u8 = (a: Uint16Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
