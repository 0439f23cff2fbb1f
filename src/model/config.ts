// Qwen2.5-VL config.json -> a typed, validated config. Field names follow transformers
// (camelCased). Two layouts exist: published checkpoints keep the text fields at the top level;
// newer transformers write them under `text_config`. Vision fields are always under `vision_config`.
// Newer transformers also spell `rope_scaling` as `rope_parameters` (with rope_theta inside).

export interface VisionConfig {
  depth: number;
  hiddenSize: number;
  intermediateSize: number;
  numHeads: number;
  /** hidden_size / num_heads (no key in config.json) */
  headDim: number;
  inChannels: number;
  patchSize: number;
  temporalPatchSize: number;
  spatialMergeSize: number;
  windowSize: number;
  fullattBlockIndexes: number[];
  outHiddenSize: number;
  hiddenAct: string;
  tokensPerSecond: number;
}

export interface TextConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  /** hidden_size / num_attention_heads unless config.json has head_dim */
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** [temporal, height, width] frequency counts; sums to headDim / 2 */
  mropeSection: [number, number, number];
  hiddenAct: string;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
}

export interface QwenVLConfig {
  modelType: string;
  text: TextConfig;
  vision: VisionConfig;
  imageTokenId: number;
  videoTokenId: number;
  visionStartTokenId: number;
  visionEndTokenId: number;
  /** `<|vision_pad|>`; present in published configs, unused by the math */
  visionTokenId?: number;
  bosTokenId?: number;
  /** eos ids from config.json (int or list there) */
  eosTokenIds: number[];
  /** the parsed JSON, for fields this type does not carry */
  raw: Record<string, unknown>;
}

export class ConfigError extends Error {
  constructor(file: string, what: string) {
    super(`${file}: ${what}`);
    this.name = 'ConfigError';
  }
}

export const SUPPORTED_MODEL_TYPE = 'qwen2_5_vl';
export const SUPPORTED_ARCHITECTURE = 'Qwen2_5_VLForConditionalGeneration';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Parse a Qwen2.5-VL config.json (string or parsed object). Throws ConfigError naming the file
 * and the field for another architecture, a missing field or an inconsistent size.
 */
export function parseConfig(json: string | unknown, file = 'config.json'): QwenVLConfig {
  let raw: unknown = json;
  if (typeof json === 'string') {
    try {
      raw = JSON.parse(json);
    } catch (e) {
      throw new ConfigError(file, `is not valid JSON (${(e as Error).message})`);
    }
  }
  if (!isObj(raw)) throw new ConfigError(file, 'is not a JSON object');
  const top = raw;

  const modelType = top.model_type;
  const archs = Array.isArray(top.architectures) ? (top.architectures as unknown[]).map(String) : [];
  const typeOk = modelType === SUPPORTED_MODEL_TYPE;
  const archOk = archs.includes(SUPPORTED_ARCHITECTURE);
  if (!(typeOk || (modelType === undefined && archOk))) {
    throw new ConfigError(
      file,
      `model_type ${JSON.stringify(modelType ?? null)} (architectures: ${archs.length ? archs.join(', ') : 'none'}) is not Qwen2.5-VL; ` +
        `Patchwork loads model_type "${SUPPORTED_MODEL_TYPE}" (${SUPPORTED_ARCHITECTURE}) only` +
        (modelType === 'qwen2_vl' ? ' (Qwen2-VL has a different vision tower)' : ''),
    );
  }

  const tc = isObj(top.text_config) ? top.text_config : undefined;
  if (!isObj(top.vision_config)) throw new ConfigError(file, 'vision_config is missing (expected an object with the vision tower sizes)');
  const vc = top.vision_config;

  // text fields: text_config first (newer transformers), then the top level (published checkpoints)
  const tget = (k: string): unknown => (tc && tc[k] !== undefined ? tc[k] : top[k]);
  const where = (k: string) => (tc && tc[k] !== undefined ? `text_config.${k}` : k);
  const int = (get: (k: string) => unknown, path: (k: string) => string, k: string, def?: number): number => {
    const v = get(k);
    if (v === undefined || v === null) {
      if (def !== undefined) return def;
      throw new ConfigError(file, `required field "${path(k)}" is missing`);
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new ConfigError(file, `field "${path(k)}" must be a non-negative integer, got ${JSON.stringify(v)}`);
    return v;
  };
  const pos = (get: (k: string) => unknown, path: (k: string) => string, k: string, def?: number): number => {
    const v = int(get, path, k, def);
    if (v === 0) throw new ConfigError(file, `field "${path(k)}" must be positive, got 0`);
    return v;
  };
  const num = (get: (k: string) => unknown, path: (k: string) => string, k: string, def: number): number => {
    const v = get(k);
    if (v === undefined || v === null) return def;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(file, `field "${path(k)}" must be a number, got ${JSON.stringify(v)}`);
    return v;
  };
  const tpos = (k: string, def?: number) => pos(tget, where, k, def);
  const vget = (k: string) => vc[k];
  const vpath = (k: string) => `vision_config.${k}`;
  const vpos = (k: string, def?: number) => pos(vget, vpath, k, def);

  // ---- text ----
  const hiddenSize = tpos('hidden_size');
  const numAttentionHeads = tpos('num_attention_heads');
  const numKeyValueHeads = tpos('num_key_value_heads', numAttentionHeads);
  const headDim = tget('head_dim') === undefined || tget('head_dim') === null ? hiddenSize / numAttentionHeads : tpos('head_dim');
  if (!Number.isInteger(headDim)) throw new ConfigError(file, `hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numAttentionHeads}`);
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    throw new ConfigError(file, `num_attention_heads ${numAttentionHeads} is not a multiple of num_key_value_heads ${numKeyValueHeads}`);
  }
  if (headDim % 2 !== 0) throw new ConfigError(file, `text head dim ${headDim} must be even for rotary embeddings`);

  // rope: rope_scaling (published) or rope_parameters (newer), in text_config or at the top
  const rope = (isObj(tget('rope_scaling')) ? tget('rope_scaling') : isObj(tget('rope_parameters')) ? tget('rope_parameters') : undefined) as Obj | undefined;
  const ropeWhere = isObj(tget('rope_scaling')) ? where('rope_scaling') : where('rope_parameters');
  const ms = rope?.mrope_section;
  if (!Array.isArray(ms) || ms.length !== 3 || !ms.every((x) => Number.isInteger(x) && x >= 0)) {
    throw new ConfigError(file, `${rope ? `${ropeWhere}.mrope_section` : 'rope_scaling.mrope_section'} must be a list of 3 integers (M-RoPE sections), got ${JSON.stringify(ms ?? null)}`);
  }
  const mropeSection = ms as [number, number, number];
  if (mropeSection[0] + mropeSection[1] + mropeSection[2] !== headDim / 2) {
    throw new ConfigError(file, `mrope_section [${mropeSection.join(', ')}] sums to ${mropeSection[0] + mropeSection[1] + mropeSection[2]} but the text head dim / 2 is ${headDim / 2}`);
  }
  const ropeTheta = rope && typeof rope.rope_theta === 'number' ? rope.rope_theta : num(tget, where, 'rope_theta', 1_000_000);

  const hiddenAct = String(tget('hidden_act') ?? 'silu');
  if (hiddenAct !== 'silu' && hiddenAct !== 'swish') throw new ConfigError(file, `${where('hidden_act')} "${hiddenAct}" is not supported (Qwen2.5-VL uses silu)`);

  const tie = tget('tie_word_embeddings');
  if (tie !== undefined && typeof tie !== 'boolean') throw new ConfigError(file, `${where('tie_word_embeddings')} must be true or false, got ${JSON.stringify(tie)}`);

  const text: TextConfig = {
    vocabSize: tpos('vocab_size'),
    hiddenSize,
    intermediateSize: tpos('intermediate_size'),
    numHiddenLayers: tpos('num_hidden_layers'),
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    rmsNormEps: num(tget, where, 'rms_norm_eps', 1e-5), // transformers' default; checkpoints say 1e-6
    ropeTheta,
    mropeSection,
    hiddenAct,
    maxPositionEmbeddings: tpos('max_position_embeddings', 32768),
    // transformers' Qwen2.5-VL default is false; every published checkpoint states it
    tieWordEmbeddings: tie === true,
  };

  // ---- vision ----
  const vHidden = vpos('hidden_size');
  const vHeads = vpos('num_heads');
  const vHeadDim = vHidden / vHeads;
  if (!Number.isInteger(vHeadDim)) throw new ConfigError(file, `vision_config.hidden_size ${vHidden} is not divisible by vision_config.num_heads ${vHeads}`);
  if (vHeadDim % 4 !== 0) throw new ConfigError(file, `vision head dim ${vHeadDim} must be a multiple of 4 (2-D rotary embedding)`);
  const depth = vpos('depth');
  const fab = vc.fullatt_block_indexes ?? [];
  if (!Array.isArray(fab) || !fab.every((x) => Number.isInteger(x) && x >= 0 && x < depth)) {
    throw new ConfigError(file, `vision_config.fullatt_block_indexes must be block indices below depth ${depth}, got ${JSON.stringify(fab)}`);
  }
  const inCh = vc.in_channels ?? vc.in_chans ?? 3;
  if (inCh !== 3) throw new ConfigError(file, `vision_config.in_channels must be 3 (RGB), got ${JSON.stringify(inCh)}`);
  const patchSize = vpos('patch_size', 14);
  const spatialMergeSize = vpos('spatial_merge_size', 2);
  const windowSize = vpos('window_size', 112);
  if (windowSize % (patchSize * spatialMergeSize) !== 0) {
    throw new ConfigError(file, `vision_config.window_size ${windowSize} is not a multiple of patch_size x spatial_merge_size = ${patchSize * spatialMergeSize}`);
  }
  const vAct = String(vc.hidden_act ?? 'silu');
  if (vAct !== 'silu' && vAct !== 'swish') throw new ConfigError(file, `vision_config.hidden_act "${vAct}" is not supported (Qwen2.5-VL uses silu)`);
  const outHiddenSize = vpos('out_hidden_size');
  if (outHiddenSize !== hiddenSize) {
    throw new ConfigError(file, `vision_config.out_hidden_size ${outHiddenSize} must equal the text hidden_size ${hiddenSize} (image features replace token embeddings)`);
  }
  const vision: VisionConfig = {
    depth,
    hiddenSize: vHidden,
    intermediateSize: vpos('intermediate_size'),
    numHeads: vHeads,
    headDim: vHeadDim,
    inChannels: 3,
    patchSize,
    temporalPatchSize: vpos('temporal_patch_size', 2),
    spatialMergeSize,
    windowSize,
    fullattBlockIndexes: (fab as number[]).slice(),
    outHiddenSize,
    hiddenAct: vAct,
    tokensPerSecond: num(vget, vpath, 'tokens_per_second', 2),
  };

  // ---- token ids: top level (both layouts), falling back to text_config ----
  const id = (k: string, def?: number): number => {
    const v = top[k] ?? tc?.[k];
    if (v === undefined || v === null) {
      if (def !== undefined) return def;
      throw new ConfigError(file, `required field "${k}" is missing`);
    }
    if (!Number.isInteger(v) || (v as number) < 0) throw new ConfigError(file, `field "${k}" must be a token id, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const optId = (k: string): number | undefined => (top[k] ?? tc?.[k]) === undefined ? undefined : id(k);
  const eosRaw = top.eos_token_id ?? tc?.eos_token_id;
  const eosTokenIds = eosRaw === undefined || eosRaw === null ? [] : (Array.isArray(eosRaw) ? eosRaw : [eosRaw]).map((v) => {
    if (!Number.isInteger(v)) throw new ConfigError(file, `eos_token_id must be an id or a list of ids, got ${JSON.stringify(eosRaw)}`);
    return v as number;
  });
  const cfg: QwenVLConfig = {
    modelType: SUPPORTED_MODEL_TYPE,
    text,
    vision,
    // transformers' defaults are Qwen's real ids
    imageTokenId: id('image_token_id', 151655),
    videoTokenId: id('video_token_id', 151656),
    visionStartTokenId: id('vision_start_token_id', 151652),
    visionEndTokenId: id('vision_end_token_id', 151653),
    visionTokenId: optId('vision_token_id'),
    bosTokenId: optId('bos_token_id'),
    eosTokenIds,
    raw: top,
  };
  for (const k of ['imageTokenId', 'videoTokenId', 'visionStartTokenId', 'visionEndTokenId'] as const) {
    if (cfg[k] >= text.vocabSize) throw new ConfigError(file, `${k} ${cfg[k]} is outside the vocabulary (vocab_size ${text.vocabSize})`);
  }
  return cfg;
}

/** Serialize back to a config.json in the published layout (text fields at the top level). */
export function configToJson(cfg: QwenVLConfig, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const t = cfg.text, v = cfg.vision;
  return {
    architectures: [SUPPORTED_ARCHITECTURE],
    attention_dropout: 0.0,
    bos_token_id: cfg.bosTokenId ?? cfg.eosTokenIds[0] ?? 0,
    eos_token_id: cfg.eosTokenIds.length === 1 ? cfg.eosTokenIds[0] : cfg.eosTokenIds,
    vision_start_token_id: cfg.visionStartTokenId,
    vision_end_token_id: cfg.visionEndTokenId,
    ...(cfg.visionTokenId !== undefined ? { vision_token_id: cfg.visionTokenId } : {}),
    image_token_id: cfg.imageTokenId,
    video_token_id: cfg.videoTokenId,
    hidden_act: t.hiddenAct,
    hidden_size: t.hiddenSize,
    initializer_range: 0.02,
    intermediate_size: t.intermediateSize,
    max_position_embeddings: t.maxPositionEmbeddings,
    max_window_layers: t.numHiddenLayers,
    model_type: SUPPORTED_MODEL_TYPE,
    num_attention_heads: t.numAttentionHeads,
    num_hidden_layers: t.numHiddenLayers,
    num_key_value_heads: t.numKeyValueHeads,
    rms_norm_eps: t.rmsNormEps,
    rope_theta: t.ropeTheta,
    sliding_window: t.maxPositionEmbeddings,
    tie_word_embeddings: t.tieWordEmbeddings,
    torch_dtype: 'bfloat16',
    transformers_version: '4.49.0',
    use_cache: true,
    use_sliding_window: false,
    vision_config: {
      depth: v.depth,
      hidden_act: v.hiddenAct,
      hidden_size: v.hiddenSize,
      intermediate_size: v.intermediateSize,
      num_heads: v.numHeads,
      in_chans: 3,
      in_channels: 3,
      out_hidden_size: v.outHiddenSize,
      patch_size: v.patchSize,
      spatial_merge_size: v.spatialMergeSize,
      spatial_patch_size: v.patchSize,
      window_size: v.windowSize,
      fullatt_block_indexes: v.fullattBlockIndexes,
      tokens_per_second: v.tokensPerSecond,
      temporal_patch_size: v.temporalPatchSize,
    },
    rope_scaling: { type: 'mrope', mrope_section: t.mropeSection },
    vocab_size: t.vocabSize,
    ...extra,
  };
}

/** Qwen/Qwen2.5-VL-3B-Instruct's config.json (published layout), for estimates before any download. */
export const QWEN2_5_VL_3B_CONFIG_JSON = {
  architectures: ['Qwen2_5_VLForConditionalGeneration'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  vision_start_token_id: 151652,
  vision_end_token_id: 151653,
  vision_token_id: 151654,
  image_token_id: 151655,
  video_token_id: 151656,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 11008,
  max_position_embeddings: 128000,
  max_window_layers: 70,
  model_type: 'qwen2_5_vl',
  num_attention_heads: 16,
  num_hidden_layers: 36,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  use_cache: true,
  use_sliding_window: false,
  vision_config: {
    depth: 32,
    hidden_act: 'silu',
    hidden_size: 1280,
    intermediate_size: 3420,
    num_heads: 16,
    in_chans: 3,
    out_hidden_size: 2048,
    patch_size: 14,
    spatial_merge_size: 2,
    spatial_patch_size: 14,
    window_size: 112,
    fullatt_block_indexes: [7, 15, 23, 31],
    tokens_per_second: 2,
    temporal_patch_size: 2,
  },
  rope_scaling: { type: 'mrope', mrope_section: [16, 24, 24] },
  vocab_size: 151936,
} as const;
