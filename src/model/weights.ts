// Model loading: config.json + safetensors (single file or sharded with model.safetensors.index.json)
// from any ModelSource, validated against the config, streamed tensor by tensor.
//
// Output: a plain map from canonical (hub-layout) names to { dtype, shape, data }.
// dtype choice: weights stay BF16 as raw u16 bits (what the GPU uploads, packed two per u32);
// F16 and F32 checkpoints are converted to BF16 with round-to-nearest-even (as torch's .to(bfloat16))
// so the GPU model has one weight format. `keepF32: true` keeps F32 tensors as f32 instead.
import { parseConfig, type QwenVLConfig } from './config.ts';
import { DTYPE_BYTES, headerLength, parseHeader, type StHeader, type StTensorInfo } from './safetensors.ts';

export type { StTensorInfo } from './safetensors.ts';
import { MissingFileError, checkFileName, type ModelSource } from './sources/source.ts';
import { QwenTokenizer, checkSpecialIds } from '../data/tokenizer.ts';
import { bf16ToF32, f16ToF32, f32ToBf16 } from '../gpu/bf16.ts';

export * from './sources/source.ts';
export { localSource, type LocalEntry } from './sources/local.ts';
export { hubSource, type HubOptions, type HubSource, type HubStats } from './sources/hub.ts';
export { cacheApiStore, memoryCache, defaultCache, type ByteCache } from './sources/cache.ts';

export type WeightDType = 'bf16' | 'f32';
export interface Weight {
  dtype: WeightDType;
  shape: number[];
  /** bf16: raw bits (upper half of the f32); f32: values */
  data: Uint16Array | Float32Array;
}
export type WeightMap = Record<string, Weight>;

/** 'hub' = published checkpoints (model.layers.N, visual.*); 'transformers' = ≥ 4.52 (model.language_model.*, model.visual.*) */
export type TensorLayout = 'hub' | 'transformers';

export class WeightsError extends Error {
  constructor(where: string, what: string) {
    super(`${where}: ${what}`);
    this.name = 'WeightsError';
  }
}

// ---------------------------------------------------------------- names and shapes

/** transformers ≥ 4.52 names -> hub names (the inverse of its _checkpoint_conversion_mapping). */
export function canonicalName(name: string): string {
  if (name.startsWith('model.language_model.')) return 'model.' + name.slice('model.language_model.'.length);
  if (name.startsWith('model.visual.')) return name.slice('model.'.length);
  return name;
}

/** hub names -> the given layout */
export function layoutName(name: string, layout: TensorLayout): string {
  if (layout === 'hub') return name;
  if (name.startsWith('visual.')) return 'model.' + name;
  if (name.startsWith('model.')) return 'model.language_model.' + name.slice('model.'.length);
  return name;
}

/** Every tensor the config implies, with its shape, in hub names. */
export function expectedWeights(cfg: QwenVLConfig): Map<string, number[]> {
  const t = cfg.text, v = cfg.vision;
  const m = new Map<string, number[]>();
  const H = t.hiddenSize, D = t.headDim, q = t.numAttentionHeads * D, kv = t.numKeyValueHeads * D, I = t.intermediateSize;
  const C = v.hiddenSize, Iv = v.intermediateSize, Cm = C * v.spatialMergeSize ** 2;
  m.set('visual.patch_embed.proj.weight', [C, v.inChannels, v.temporalPatchSize, v.patchSize, v.patchSize]);
  for (let i = 0; i < v.depth; i++) {
    const p = `visual.blocks.${i}.`;
    m.set(p + 'norm1.weight', [C]);
    m.set(p + 'norm2.weight', [C]);
    m.set(p + 'attn.qkv.weight', [3 * C, C]);
    m.set(p + 'attn.qkv.bias', [3 * C]);
    m.set(p + 'attn.proj.weight', [C, C]);
    m.set(p + 'attn.proj.bias', [C]);
    for (const n of ['gate_proj', 'up_proj']) {
      m.set(p + `mlp.${n}.weight`, [Iv, C]);
      m.set(p + `mlp.${n}.bias`, [Iv]);
    }
    m.set(p + 'mlp.down_proj.weight', [C, Iv]);
    m.set(p + 'mlp.down_proj.bias', [C]);
  }
  m.set('visual.merger.ln_q.weight', [C]);
  m.set('visual.merger.mlp.0.weight', [Cm, Cm]);
  m.set('visual.merger.mlp.0.bias', [Cm]);
  m.set('visual.merger.mlp.2.weight', [v.outHiddenSize, Cm]);
  m.set('visual.merger.mlp.2.bias', [v.outHiddenSize]);
  m.set('model.embed_tokens.weight', [t.vocabSize, H]);
  for (let i = 0; i < t.numHiddenLayers; i++) {
    const p = `model.layers.${i}.`;
    m.set(p + 'input_layernorm.weight', [H]);
    m.set(p + 'post_attention_layernorm.weight', [H]);
    m.set(p + 'self_attn.q_proj.weight', [q, H]);
    m.set(p + 'self_attn.q_proj.bias', [q]);
    m.set(p + 'self_attn.k_proj.weight', [kv, H]);
    m.set(p + 'self_attn.k_proj.bias', [kv]);
    m.set(p + 'self_attn.v_proj.weight', [kv, H]);
    m.set(p + 'self_attn.v_proj.bias', [kv]);
    m.set(p + 'self_attn.o_proj.weight', [H, q]);
    m.set(p + 'mlp.gate_proj.weight', [I, H]);
    m.set(p + 'mlp.up_proj.weight', [I, H]);
    m.set(p + 'mlp.down_proj.weight', [H, I]);
  }
  m.set('model.norm.weight', [H]);
  if (!t.tieWordEmbeddings) m.set('lm_head.weight', [t.vocabSize, H]);
  return m;
}

/** The output projection: lm_head.weight, or the embedding when tied. */
export function lmHeadName(cfg: QwenVLConfig): string {
  return cfg.text.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
}

// ---------------------------------------------------------------- dtype conversion

/** Any weight -> f32 values (a copy for bf16, the same array for f32). */
export function weightF32(w: Weight): Float32Array {
  return w.dtype === 'f32' ? (w.data as Float32Array) : bf16ToF32(w.data as Uint16Array);
}

/**
 * NaN/Inf in raw float bits: the count and the first index. Run on the bytes as they are decoded
 * (already in cache), so a damaged checkpoint costs no second pass. BF16 is tested two values per
 * u32 word; F16 and F32 on their exponent bits.
 */
function nonFinite(bits: Uint16Array | Uint32Array, dtype: 'BF16' | 'F16' | 'F32'): { count: number; first: number } {
  let count = 0, first = -1;
  const hit = (i: number) => {
    if (first < 0) first = i;
    count++;
  };
  if (dtype === 'F32') {
    const u = bits as Uint32Array;
    for (let i = 0; i < u.length; i++) if ((u[i] & 0x7f800000) === 0x7f800000) hit(i);
  } else if (dtype === 'F16') {
    const h = bits as Uint16Array;
    for (let i = 0; i < h.length; i++) if ((h[i] & 0x7c00) === 0x7c00) hit(i);
  } else {
    const h = bits as Uint16Array, pairs = h.length >> 1;
    const w = new Uint32Array(h.buffer, h.byteOffset, pairs);
    for (let i = 0; i < pairs; i++) {
      const x = w[i];
      if ((x & 0x7f80) === 0x7f80) hit(2 * i);
      if ((x & 0x7f800000) === 0x7f800000) hit(2 * i + 1);
    }
    if (h.length & 1 && (h[h.length - 1] & 0x7f80) === 0x7f80) hit(h.length - 1);
  }
  return { count, first };
}

/** Raw little-endian bytes of a safetensors tensor -> Weight (+ its NaN/Inf count). Copies, so the chunk can be freed. */
function decode(bytes: Uint8Array, info: StTensorInfo, keepF32: boolean): { w: Weight; bad: { count: number; first: number } } {
  const n = bytes.byteLength / DTYPE_BYTES[info.dtype];
  const aligned = bytes.slice(); // own buffer, offset 0: typed views are safe
  switch (info.dtype) {
    case 'BF16': {
      const h = new Uint16Array(aligned.buffer, 0, n);
      return { w: { dtype: 'bf16', shape: info.shape, data: h }, bad: nonFinite(h, 'BF16') };
    }
    case 'F16': {
      const h = new Uint16Array(aligned.buffer, 0, n);
      const f = new Float32Array(n);
      for (let i = 0; i < n; i++) f[i] = f16ToF32(h[i]);
      return { w: { dtype: 'bf16', shape: info.shape, data: f32ToBf16(f) }, bad: nonFinite(h, 'F16') };
    }
    case 'F32': {
      const f = new Float32Array(aligned.buffer, 0, n);
      const bad = nonFinite(new Uint32Array(aligned.buffer, 0, n), 'F32');
      return { w: keepF32 ? { dtype: 'f32', shape: info.shape, data: f } : { dtype: 'bf16', shape: info.shape, data: f32ToBf16(f) }, bad };
    }
    default:
      throw new Error(`unreachable dtype ${info.dtype}`);
  }
}

// ---------------------------------------------------------------- reading

export interface LoadProgress {
  phase: 'config' | 'headers' | 'tensors' | 'done';
  file: string;
  /** tensor bytes read so far and in all (header bytes not counted) */
  loadedBytes: number;
  totalBytes: number;
  tensorsLoaded: number;
  tensorCount: number;
}

export interface LoadWeightsOptions {
  onProgress?: (p: LoadProgress) => void;
  /** called once per tensor, in file order, as soon as it is read (e.g. to upload it and drop it) */
  onTensor?: (name: string, w: Weight) => void | Promise<void>;
  /** keep tensors in the returned map (default true; false with onTensor streams without holding them) */
  keep?: boolean;
  /** keep F32 tensors as f32 instead of converting to BF16 */
  keepF32?: boolean;
  /**
   * Tensors the caller decodes itself (bitsandbytes 4-bit weights and their quant state, see
   * quant.ts): `claim` sees each tensor's canonical name and header first (it may throw to refuse
   * it); claimed tensors skip the BF16/F16/F32 shape checks and reach `onRaw` as their own bytes.
   */
  raw?: {
    claim(canonical: string, info: StTensorInfo, file: string): boolean;
    onRaw(canonical: string, bytes: Uint8Array, info: StTensorInfo): void | Promise<void>;
  };
  /** largest single read; neighbouring small tensors are fetched together up to this size (default 64 MiB) */
  chunkBytes?: number;
  signal?: AbortSignal;
}

/**
 * Something the loader accepted but a user should know, for the front ends to print or show:
 * 'unused-tensor' (present, not in the architecture), 'tied-lm-head' (a stored lm_head.weight of a
 * tied model: the embedding is used), 'index-mismatch' (a shard holds a tensor the index places
 * elsewhere: ignored, as transformers does), 'layout' (the tensor-name layout that was detected).
 */
export interface LoadWarning {
  kind: 'unused-tensor' | 'tied-lm-head' | 'index-mismatch' | 'layout';
  message: string;
  tensor?: string;
  file?: string;
}

export interface LoadedWeights {
  weights: WeightMap;
  layout: TensorLayout;
  /** safetensors files read, in order */
  files: string[];
  /** the messages of loadWarnings */
  warnings: string[];
  /** everything accepted with a note (see LoadWarning) */
  loadWarnings: LoadWarning[];
}

export interface LoadedModel extends LoadedWeights {
  config: QwenVLConfig;
  source: string;
}

interface Located { file: string; info: StTensorInfo; canonical: string }

/** One safetensors file's header, read by range and validated. */
export async function readHeader(src: ModelSource, file: string): Promise<StHeader> {
  const where = `${src.id}: ${file}`;
  const size = await src.size(file);
  if (size < 8) throw new WeightsError(where, `file is ${size} bytes, too short for a safetensors header`);
  const n = headerLength(await src.readRange(file, 0, 8), where);
  if (8 + n > size) throw new WeightsError(where, `header of ${n} bytes runs past the end of the ${size}-byte file (truncated?)`);
  return parseHeader(await src.readRange(file, 8, 8 + n), size, where);
}

/** The shard list: from model.safetensors.index.json when present, else the single model.safetensors. */
export async function shardPlan(src: ModelSource): Promise<{ files: string[]; index?: Map<string, string> }> {
  let indexBytes: Uint8Array | undefined;
  try {
    indexBytes = await src.read('model.safetensors.index.json');
  } catch (e) {
    if (!(e instanceof MissingFileError)) throw e;
  }
  if (!indexBytes) {
    try {
      await src.size('model.safetensors');
    } catch (e) {
      if (e instanceof MissingFileError) throw new WeightsError(src.id, 'neither model.safetensors nor model.safetensors.index.json is in the model folder');
      throw e;
    }
    return { files: ['model.safetensors'] };
  }
  const where = `${src.id}: model.safetensors.index.json`;
  let j: unknown;
  try {
    j = JSON.parse(new TextDecoder().decode(indexBytes));
  } catch (e) {
    throw new WeightsError(where, `is not valid JSON (${(e as Error).message})`);
  }
  const wm = (j as { weight_map?: unknown })?.weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) throw new WeightsError(where, 'has no "weight_map" object');
  const index = new Map<string, string>();
  for (const [name, file] of Object.entries(wm)) {
    if (typeof file !== 'string') throw new WeightsError(where, `weight_map["${name}"] is not a file name`);
    try {
      checkFileName(src.id, file);
    } catch {
      throw new WeightsError(where, `weight_map["${name}"] = "${file}" is not a file name inside the folder`);
    }
    index.set(name, file);
  }
  const files = [...new Set(index.values())].sort();
  if (!files.length) throw new WeightsError(where, 'weight_map is empty');
  return { files, index };
}

/** Read config.json and all weights. */
export async function loadModel(src: ModelSource, opts: LoadWeightsOptions = {}): Promise<LoadedModel> {
  opts.onProgress?.({ phase: 'config', file: 'config.json', loadedBytes: 0, totalBytes: 0, tensorsLoaded: 0, tensorCount: 0 });
  let bytes: Uint8Array;
  try {
    bytes = await src.read('config.json');
  } catch (e) {
    if (e instanceof MissingFileError) throw new WeightsError(src.id, 'config.json is missing: a model folder needs config.json next to its safetensors');
    throw e;
  }
  const config = parseConfig(new TextDecoder().decode(bytes), `${src.id}: config.json`);
  const w = await loadWeights(src, config, opts);
  return { ...w, config, source: src.id };
}

/** Read, validate against `cfg` and decode every weight, streamed in chunks of at most `chunkBytes`. */
export async function loadWeights(src: ModelSource, cfg: QwenVLConfig, opts: LoadWeightsOptions = {}): Promise<LoadedWeights> {
  const chunkBytes = opts.chunkBytes ?? 64 << 20;
  const keep = opts.keep ?? true;
  const plan = await shardPlan(src);

  const notes: LoadWarning[] = [];
  // headers
  const located = new Map<string, Located>();
  const rawNames: string[] = [];
  for (const file of plan.files) {
    opts.signal?.throwIfAborted();
    opts.onProgress?.({ phase: 'headers', file, loadedBytes: 0, totalBytes: 0, tensorsLoaded: 0, tensorCount: 0 });
    let h: StHeader;
    try {
      h = await readHeader(src, file);
    } catch (e) {
      if (e instanceof MissingFileError && plan.index) throw new WeightsError(`${src.id}: model.safetensors.index.json`, `lists shard "${file}" but the folder has no such file`);
      throw e;
    }
    for (const [name, info] of h.tensors) {
      if (plan.index && plan.index.get(name) !== file) {
        // a tensor the index places elsewhere (or omits) is ignored, as transformers does
        const at = plan.index.get(name);
        notes.push({ kind: 'index-mismatch', tensor: name, file, message: `tensor "${name}" in ${file} is ignored: model.safetensors.index.json ${at ? `places it in ${at}` : 'does not list it'}` });
        continue;
      }
      const canonical = canonicalName(name);
      const prev = located.get(canonical);
      if (prev) throw new WeightsError(`${src.id}: ${file}`, `tensor "${name}" duplicates "${prev.info.name}" in ${prev.file} (both name layouts present?)`);
      located.set(canonical, { file, info, canonical });
      rawNames.push(name);
    }
  }
  if (plan.index) {
    for (const [name, file] of plan.index) {
      if (!located.has(canonicalName(name))) throw new WeightsError(`${src.id}: ${file}`, `model.safetensors.index.json places tensor "${name}" in this shard but its header does not have it`);
    }
  }
  const layout: TensorLayout = rawNames.some((n) => n.startsWith('model.language_model.') || n.startsWith('model.visual.')) ? 'transformers' : 'hub';
  if (layout === 'transformers') notes.push({ kind: 'layout', message: 'tensor names are in the transformers ≥ 4.52 layout (model.language_model.*, model.visual.*): read as the published layout' });

  // validation against the config
  const expected = expectedWeights(cfg);
  const missing = [...expected.keys()].filter((n) => !located.has(n));
  if (missing.length) {
    const shown = missing.slice(0, 8).map((n) => `"${layoutName(n, layout)}"`).join(', ');
    const hint = missing.length === 1 && missing[0] === 'lm_head.weight' ? ' (config.json says tie_word_embeddings: false)' : '';
    throw new WeightsError(src.id, `${missing.length} tensor(s) missing from the checkpoint: ${shown}${missing.length > 8 ? `, … ${missing.length - 8} more` : ''}${hint}`);
  }
  const claimed = new Set<string>();
  for (const [name, loc] of located) {
    const shape = expected.get(name);
    const where = `${src.id}: ${loc.file}`;
    if (opts.raw?.claim(name, loc.info, loc.file)) {
      claimed.add(name);
      continue;
    }
    if (!shape) {
      notes.push(name === 'lm_head.weight'
        ? { kind: 'tied-lm-head', tensor: loc.info.name, file: loc.file, message: 'lm_head.weight present but tie_word_embeddings is true: the tied embedding is used' }
        : { kind: 'unused-tensor', tensor: loc.info.name, file: loc.file, message: `unused tensor "${loc.info.name}" in ${loc.file}` });
      continue;
    }
    if (loc.info.shape.length !== shape.length || loc.info.shape.some((d, i) => d !== shape[i])) {
      throw new WeightsError(where, `tensor "${loc.info.name}" has shape [${loc.info.shape.join(', ')}] but config.json implies [${shape.join(', ')}]`);
    }
    if (loc.info.dtype !== 'BF16' && loc.info.dtype !== 'F16' && loc.info.dtype !== 'F32') {
      throw new WeightsError(where, `tensor "${loc.info.name}" has dtype ${loc.info.dtype}; weights must be BF16, F16 or F32`);
    }
  }

  // reads: per file, neighbouring tensors coalesced into chunks
  const weights: WeightMap = {};
  const wanted = [...located.values()].filter((l) => expected.has(l.canonical) || claimed.has(l.canonical));
  const totalBytes = wanted.reduce((a, l) => a + (l.info.end - l.info.begin), 0);
  let loadedBytes = 0, tensorsLoaded = 0;
  const broken: string[] = [];
  for (const file of plan.files) {
    const inFile = wanted.filter((l) => l.file === file).sort((a, b) => a.info.begin - b.info.begin);
    let i = 0;
    while (i < inFile.length) {
      const begin = inFile[i].info.begin;
      let j = i + 1;
      // join the next tensor when it starts close by and the chunk stays under the limit
      while (j < inFile.length && inFile[j].info.begin - inFile[j - 1].info.end <= 65536 && inFile[j].info.end - begin <= chunkBytes) j++;
      const end = inFile[j - 1].info.end;
      opts.signal?.throwIfAborted();
      const chunk = await src.readRange(file, begin, end);
      if (chunk.byteLength !== end - begin) throw new WeightsError(`${src.id}: ${file}`, `read ${chunk.byteLength} bytes at offset ${begin}, expected ${end - begin} (truncated?)`);
      for (let k = i; k < j; k++) {
        const l = inFile[k];
        if (claimed.has(l.canonical)) {
          await opts.raw!.onRaw(l.canonical, chunk.slice(l.info.begin - begin, l.info.end - begin), l.info);
          tensorsLoaded++;
          continue;
        }
        const { w, bad } = decode(chunk.subarray(l.info.begin - begin, l.info.end - begin), l.info, opts.keepF32 ?? false);
        if (bad.count) broken.push(`"${l.info.name}" in ${file} (${bad.count} of ${w.data.length} values, the first at index ${bad.first})`);
        if (opts.onTensor) await opts.onTensor(l.canonical, w);
        if (keep) weights[l.canonical] = w;
        tensorsLoaded++;
      }
      loadedBytes += end - begin - gapBytes(inFile, i, j);
      opts.onProgress?.({ phase: 'tensors', file, loadedBytes, totalBytes, tensorsLoaded, tensorCount: wanted.length });
      i = j;
    }
  }
  if (broken.length) throw new WeightsError(src.id, `${broken.length} tensor(s) hold NaN/Inf: ${broken.join('; ')}. The checkpoint is damaged (or was saved from a diverged run): download it again or pick another`);
  opts.onProgress?.({ phase: 'done', file: '', loadedBytes, totalBytes, tensorsLoaded, tensorCount: wanted.length });
  return { weights, layout, files: plan.files, warnings: notes.map((n) => n.message), loadWarnings: notes };
}

function gapBytes(l: Located[], i: number, j: number): number {
  let g = 0;
  for (let k = i + 1; k < j; k++) g += l[k].info.begin - l[k - 1].info.end;
  return g;
}

// ---------------------------------------------------------------- tokenizer

/**
 * The tokenizer of a model folder: tokenizer.json (required: the built-in tokenizer is for the
 * built-in tiny model only, and silently using it for another model would train on other ids),
 * tokenizer_config.json when present (its chat_template, else chat_template.json's), cross-checked
 * against config.json's special ids and vocabulary size. Errors name the file and both ids.
 */
export async function loadTokenizer(src: ModelSource, cfg: QwenVLConfig): Promise<QwenTokenizer> {
  const files = await src.list();
  if (!files.includes('tokenizer.json')) {
    throw new WeightsError(src.id, 'tokenizer.json is missing: a model folder needs the tokenizer it was trained with (the built-in Qwen tokenizer is used only for the built-in tiny model). Copy tokenizer.json and tokenizer_config.json from the base model\'s repository');
  }
  const text = async (f: string) => new TextDecoder().decode(await src.read(f));
  const json = async (f: string): Promise<Record<string, unknown>> => {
    try {
      return JSON.parse(await text(f)) as Record<string, unknown>;
    } catch (e) {
      throw new WeightsError(`${src.id}: ${f}`, `is not valid JSON (${(e as Error).message})`);
    }
  };
  const tokCfg = files.includes('tokenizer_config.json') ? await json('tokenizer_config.json') : {};
  if (typeof tokCfg.chat_template !== 'string' && files.includes('chat_template.json')) {
    const ct = (await json('chat_template.json')).chat_template;
    if (typeof ct === 'string') tokCfg.chat_template = ct;
  }
  let tok: QwenTokenizer;
  try {
    tok = QwenTokenizer.fromJSON(await text('tokenizer.json'), tokCfg);
  } catch (e) {
    throw new WeightsError(src.id, (e as Error).message);
  }
  const one = (field: string, id: number | undefined) => (id === undefined ? undefined : { field, ids: [id] });
  try {
    checkSpecialIds(tok, {
      imagePad: one('image_token_id', cfg.imageTokenId),
      videoPad: one('video_token_id', cfg.videoTokenId),
      visionStart: one('vision_start_token_id', cfg.visionStartTokenId),
      visionEnd: one('vision_end_token_id', cfg.visionEndTokenId),
    }, 'config.json');
    // eos_token_id is <|im_end|> (Instruct) or <|endoftext|>; each listed id must be one of them
    const stops = [tok.special.imEnd, tok.special.endOfText];
    const badEos = cfg.eosTokenIds.filter((id) => !stops.includes(id));
    if (badEos.length) throw new Error(`tokenizer.json does not match config.json: eos_token_id ${badEos.join(', ')} is neither <|im_end|> (id ${stops[0]}) nor <|endoftext|> (id ${stops[1]}) in tokenizer.json. Use the tokenizer files that came with this model.`);
  } catch (e) {
    throw new WeightsError(src.id, (e as Error).message);
  }
  if (tok.vocabSize > cfg.text.vocabSize) {
    throw new WeightsError(src.id, `tokenizer.json has ${tok.vocabSize} tokens but config.json vocab_size is ${cfg.text.vocabSize}: ids past the embedding table cannot be looked up. Use the tokenizer files that came with this model`);
  }
  return tok;
}
