// GPU memory estimate for LoRA training, before anything is allocated: weights (BF16), LoRA
// parameters + gradients + AdamW moments (f32), and the activations the hand-written backward keeps,
// with or without per-layer recomputation. Checked against the adapter's buffer limits so the
// studio can refuse with numbers instead of crashing mid-step.
//
// Assumptions (state them when quoting the figures): activations f32; attention is flash-style
// (a log-sum-exp per query and head is kept, never the [heads, L, L] probabilities); the lm_head +
// log-softmax work on vocabulary chunks; a frozen vision tower runs forward only, one block live at
// a time (a tower with LoRA keeps its blocks' activations, or their inputs with recomputation);
// batch = sequences of the same length.
import type { QwenVLConfig } from './config.ts';
import { targetedModules, type LoraConfig } from './lora.ts';
import { expectedWeights } from './weights.ts';
import { nf4Bytes } from '../gpu/nf4.ts';
import { quantizesOnLoad, type QuantPlan } from './quant.ts';
import { smartResize } from '../data/image.ts';

export interface GpuLimits {
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
}

/** WebGPU's default limits (what a device gets without requesting more). */
export const DEFAULT_LIMITS: GpuLimits = { maxBufferSize: 256 * 2 ** 20, maxStorageBufferBindingSize: 128 * 2 ** 20 };

export interface MemoryRequest {
  config: QwenVLConfig;
  lora: LoraConfig;
  /** image sizes in pixels (resized with smart_resize unless `resized`) */
  images: { height: number; width: number }[];
  resized?: boolean;
  minPixels?: number;
  maxPixels?: number;
  /** tokens that are not image pads (template, question, answer) */
  textTokens: number;
  /** sequences per step (default 1) */
  batch?: number;
  /** per-layer recomputation (gradient checkpointing): keep only each layer's input */
  recompute: boolean;
  /** lm_head vocabulary chunk (default 16384) */
  vocabChunk?: number;
  /** 4-bit NF4 base (QLoRA): the Linear layers bitsandbytes quantises take 0.5 byte per weight + absmax */
  quantize?: 'nf4';
  /** with NF4: the vision tower's Linear layers too (default true) */
  quantizeVision?: boolean;
  /** with NF4: double-quantised absmax (default true, as quantise-on-load does) */
  doubleQuant?: boolean;
}

export interface MemoryItem {
  name: string;
  /** [dims] of one instance */
  shape: number[];
  bytes: number;
  note?: string;
}

export interface MemoryEstimate {
  seqLen: number;
  imageTokens: number;
  patches: number;
  batch: number;
  recompute: boolean;
  weights: { params: number; bytes: number; visionBytes: number; textBytes: number; embeddingBytes: number; quantize?: 'nf4'; nf4Params: number; nf4Bytes: number };
  lora: { modules: number; params: number; paramBytes: number; gradBytes: number; adamBytes: number; bytes: number };
  activations: {
    /** what one decoder layer keeps for its backward (without recomputation) */
    perLayer: MemoryItem[];
    perLayerBytes: number;
    /** bytes kept across all layers between forward and backward */
    keptBytes: number;
    /** one layer's activations rebuilt during backward (recompute only) */
    recomputeBytes: number;
    /** gradient buffers live while one layer runs backward */
    backwardScratchBytes: number;
    /** embeddings, rotary tables, final norm, logits chunk and its gradient, ids and labels */
    otherBytes: number;
    other: MemoryItem[];
    /** peak of the frozen vision tower's forward (freed before the decoder starts when frozen) */
    visionPeakBytes: number;
    /** kept for a trained vision tower (LoRA on vision modules) */
    visionKeptBytes: number;
    /** peak of activations + scratch during the step */
    peakBytes: number;
  };
  totalBytes: number;
  /** every buffer (weights and activations), largest first; those above a binding limit need splitting */
  buffers: MemoryItem[];
}

const F32 = 4, BF16 = 2;
const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);
const item = (name: string, shape: number[], bytesPer = F32, note?: string): MemoryItem => ({ name, shape, bytes: prod(shape) * bytesPer, ...(note ? { note } : {}) });
const sum = (xs: MemoryItem[]) => xs.reduce((a, x) => a + x.bytes, 0);

export function estimateMemory(req: MemoryRequest): MemoryEstimate {
  const cfg = req.config, t = cfg.text, v = cfg.vision;
  const B = req.batch ?? 1;
  const factor = v.patchSize * v.spatialMergeSize;
  let patches = 0, imageTokens = 0;
  for (const im of req.images) {
    const [h, w] = req.resized ? [im.height, im.width] : smartResize(im.height, im.width, factor, req.minPixels, req.maxPixels);
    if (h % factor || w % factor) throw new Error(`memory estimate: image ${h}x${w} is not a multiple of ${factor} (pass resized: false to apply smart_resize)`);
    const gh = h / v.patchSize, gw = w / v.patchSize;
    patches += gh * gw;
    imageTokens += (gh * gw) / v.spatialMergeSize ** 2;
  }
  const L = req.textTokens + imageTokens;
  const T = B * L; // rows through the decoder
  const H = t.hiddenSize, D = t.headDim, Hq = t.numAttentionHeads, Hkv = t.numKeyValueHeads, I = t.intermediateSize, V = t.vocabSize;

  // ---- weights (BF16; the Linear layers in NF4 with quantize: codes + absmax + the 272-value maps)
  let params = 0, visionP = 0, weightsBytes = 0, visionBytes = 0, nf4P = 0, nf4B = 0;
  const weightItems: MemoryItem[] = [];
  const plan: QuantPlan = { quantize: req.quantize, quantizeVision: req.quantizeVision ?? true, doubleQuant: req.doubleQuant ?? true, skipModules: ['lm_head'] };
  for (const [name, shape] of expectedWeights(cfg)) {
    const n = prod(shape);
    params += n;
    const q = quantizesOnLoad(name, plan);
    const it = q ? { name, shape, bytes: nf4Bytes(n, 64, plan.doubleQuant) + 272 * F32, note: 'NF4' } : item(name, shape, BF16);
    if (q) { nf4P += n; nf4B += it.bytes; }
    weightsBytes += it.bytes;
    if (name.startsWith('visual.')) { visionP += n; visionBytes += it.bytes; }
    weightItems.push(it);
  }
  const embeddingBytes = V * H * BF16 * (t.tieWordEmbeddings ? 1 : 2);

  // ---- LoRA (f32 params, grads, AdamW m and v)
  const mods = targetedModules(cfg, req.lora);
  const loraP = mods.reduce((a, m) => a + m.r * (m.inFeatures + m.outFeatures), 0);
  const lora = { modules: mods.length, params: loraP, paramBytes: loraP * F32, gradBytes: loraP * F32, adamBytes: 2 * loraP * F32, bytes: 4 * loraP * F32 };

  // ---- per decoder layer, kept for backward
  const textMods = (layer: number) => mods.filter((m) => m.tower === 'text' && m.layer === layer);
  const loraRows = (layer: number) => textMods(layer).map((m) => item(`lora ${m.name.split('.').slice(-2).join('.')} x·Aᵀ`, [T, m.r], F32, 'for dB'));
  const perLayer: MemoryItem[] = [
    item('x (layer input, residual)', [T, H]),
    item('rstd1 (input_layernorm 1/rms)', [T]),
    item('h1 (input_layernorm out)', [T, H], F32, 'input of q/k/v; dA of their LoRA'),
    item('q (after M-RoPE)', [T, Hq * D]),
    item('k (after M-RoPE)', [T, Hkv * D]),
    item('v', [T, Hkv * D]),
    item('attention lse', [B, Hq, L], F32, 'flash-style backward'),
    item('attn (attention out)', [T, Hq * D], F32, 'input of o_proj'),
    item('x2 (residual after attention)', [T, H]),
    item('rstd2 (post_attention_layernorm 1/rms)', [T]),
    item('h2 (post_attention_layernorm out)', [T, H], F32, 'input of gate/up'),
    item('gate', [T, I]),
    item('up', [T, I]),
    item('act = silu(gate)·up', [T, I], F32, 'input of down_proj'),
    ...loraRows(0),
  ];
  const perLayerBytes = sum(perLayer);
  const layerInput = perLayer[0].bytes;
  const keptBytes = req.recompute ? t.numHiddenLayers * layerInput : t.numHiddenLayers * perLayerBytes;
  const recomputeBytes = req.recompute ? perLayerBytes : 0;
  // backward of one layer: dx (residual grad) + grads of its largest intermediates, live together
  const scratch: MemoryItem[] = [
    item('dx (residual gradient)', [T, H]),
    item('dh', [T, H]),
    item('dq, dk, dv', [T, (Hq + 2 * Hkv) * D]),
    item('dattn', [T, Hq * D]),
    item('dgate, dup', [T, 2 * I]),
    item('dact', [T, I]),
  ];
  const backwardScratchBytes = sum(scratch);

  // ---- everything else
  const chunk = Math.min(V, req.vocabChunk ?? 16384);
  const other: MemoryItem[] = [
    item('inputs_embeds / image embeds', [B * imageTokens, H], F32, 'vision output, constant for the decoder'),
    item('M-RoPE cos + sin', [2, T, D / 2]),
    item('final norm out', [T, H]),
    item('logits chunk', [T, chunk], F32, `vocabulary in chunks of ${chunk}`),
    item('dlogits chunk', [T, chunk]),
    item('input ids, labels, positions', [T, 5], 4),
  ];
  const otherBytes = sum(other);

  // ---- vision tower
  const N = B * patches, C = v.hiddenSize, Iv = v.intermediateSize, Mv = N / v.spatialMergeSize ** 2;
  const visionWorking = [
    item('pixel_values', [N, v.inChannels * v.temporalPatchSize * v.patchSize ** 2]),
    item('x', [N, C]), item('h', [N, C]), item('qkv', [N, 3 * C]), item('q, k (rotated)', [N, 2 * C]),
    item('attn', [N, C]), item('gate, up, act', [N, 3 * Iv]), item('rotary cos + sin', [2, N, v.headDim / 2]),
    item('merger', [Mv, 2 * C * v.spatialMergeSize ** 2]),
  ];
  const visionPeakBytes = sum(visionWorking);
  const visionTrained = mods.some((m) => m.tower === 'vision');
  // a trained tower keeps per block x, h1, q, k, v, attn, x2, h2 and gate, up, act (only each block's
  // input with recompute, plus the block being rebuilt), and the merger's input, ln_q, mlp.0, GELU
  const visionBlock = N * (8 * C + 3 * Iv);
  const visionKeptBytes = visionTrained ? ((req.recompute ? v.depth * N * C + visionBlock : v.depth * visionBlock) + 4 * N * C) * F32 : 0;

  // peak: kept activations + the layer being rebuilt + backward scratch + the rest; a frozen
  // vision tower's peak happens earlier, while nothing else is live but its output
  const decoderPeak = keptBytes + recomputeBytes + backwardScratchBytes + otherBytes + visionKeptBytes;
  const peakBytes = Math.max(decoderPeak, visionTrained ? 0 : visionPeakBytes + other[0].bytes);
  const totalBytes = weightsBytes + lora.bytes + peakBytes;

  const buffers = [...weightItems, ...perLayer, ...scratch, ...other, ...visionWorking].sort((a, b) => b.bytes - a.bytes);

  return {
    seqLen: L, imageTokens, patches, batch: B, recompute: req.recompute,
    weights: { params, bytes: weightsBytes, visionBytes, textBytes: weightsBytes - visionBytes, embeddingBytes, quantize: req.quantize, nf4Params: nf4P, nf4Bytes: nf4B },
    lora,
    activations: { perLayer, perLayerBytes, keptBytes, recomputeBytes, backwardScratchBytes, otherBytes, other, visionPeakBytes, visionKeptBytes, peakBytes },
    totalBytes,
    buffers,
  };
}

export interface Split {
  name: string;
  bytes: number;
  limit: number;
  /** buffers needed, splitting on whole rows */
  parts: number;
}

/** Buffers above a limit and how many row-aligned parts each needs. */
export function neededSplits(items: MemoryItem[], limits: GpuLimits): Split[] {
  const limit = Math.min(limits.maxBufferSize, limits.maxStorageBufferBindingSize);
  return items.filter((x) => x.bytes > limit).map((x) => {
    const rowBytes = x.bytes / x.shape[0];
    const rowsPer = Math.max(1, Math.floor(limit / rowBytes));
    return { name: x.name, bytes: x.bytes, limit, parts: Math.ceil(x.shape[0] / rowsPer) };
  });
}

export interface MemoryCheck {
  ok: boolean;
  splits: Split[];
  message: string;
}

export const mib = (b: number) => (b < 2 ** 20 ? `${(b / 1024).toFixed(1)} KiB` : `${(b / 2 ** 20).toFixed(1)} MiB`);
export const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

/**
 * Compare an estimate with the device. `budgetBytes`: what the user/adapter can give (WebGPU does
 * not report memory; the studio asks or uses a conservative default). `canSplit`: whether the GPU
 * model splits oversized tensors across buffers.
 */
export function checkMemory(est: MemoryEstimate, limits: GpuLimits, opts: { budgetBytes?: number; canSplit?: boolean } = {}): MemoryCheck {
  const splits = neededSplits(est.buffers, limits);
  const problems: string[] = [];
  if (opts.budgetBytes !== undefined && est.totalBytes > opts.budgetBytes) {
    const a = est.activations, layers = a.keptBytes / (est.recompute ? a.perLayer[0].bytes : a.perLayerBytes);
    const saved = layers * (a.perLayerBytes - a.perLayer[0].bytes) - a.perLayerBytes;
    problems.push(
      `needs about ${gib(est.totalBytes)} of GPU memory (weights ${gib(est.weights.bytes)}, LoRA + AdamW ${mib(est.lora.bytes)}, activations ${gib(a.peakBytes)}) but only ${gib(opts.budgetBytes)} is available` +
        (est.recompute ? '; use a smaller image or fewer tokens' : `; turn on recomputation (saves about ${gib(saved)}) or use a smaller image`),
    );
  }
  if (splits.length && !opts.canSplit) {
    for (const s of splits) problems.push(`${s.name} is ${mib(s.bytes)}, above the adapter's buffer limit of ${mib(s.limit)}: it needs ${s.parts} buffers`);
  }
  const ok = problems.length === 0;
  const summary = `Qwen2.5-VL LoRA step, ${est.batch}×${est.seqLen} tokens (${est.imageTokens} image): ~${gib(est.totalBytes)}`;
  const splitNote = splits.length && opts.canSplit ? `; split across buffers: ${splits.map((s) => `${s.name} → ${s.parts}`).join(', ')}` : '';
  return { ok, splits, message: ok ? summary + splitNote : `Cannot train on this device: ${problems.join('; ')}.` };
}

/** A human-readable breakdown (README, logs). */
export function formatEstimate(est: MemoryEstimate): string {
  const a = est.activations;
  const lines = [
    `sequence ${est.batch}×${est.seqLen} tokens (${est.imageTokens} image tokens from ${est.patches} patches), recompute ${est.recompute ? 'on' : 'off'}`,
    est.weights.quantize
      ? `weights (NF4 Linear layers + BF16 rest): ${gib(est.weights.bytes)} (${(est.weights.params / 1e9).toFixed(3)} B params, ${(est.weights.nf4Params / 1e9).toFixed(3)} B of them NF4 in ${mib(est.weights.nf4Bytes)}; vision ${mib(est.weights.visionBytes)}, embedding ${mib(est.weights.embeddingBytes)})`
      : `weights (BF16): ${gib(est.weights.bytes)} (${(est.weights.params / 1e9).toFixed(3)} B params; vision ${mib(est.weights.visionBytes)}, embedding ${mib(est.weights.embeddingBytes)})`,
    `LoRA: ${est.lora.modules} modules, ${(est.lora.params / 1e6).toFixed(2)} M params: params ${mib(est.lora.paramBytes)} + grads ${mib(est.lora.gradBytes)} + AdamW ${mib(est.lora.adamBytes)} = ${mib(est.lora.bytes)}`,
    `activations per layer (f32): ${mib(a.perLayerBytes)}: ${a.perLayer.map((x) => `${x.name} ${mib(x.bytes)}`).join(', ')}`,
    `kept between forward and backward: ${mib(a.keptBytes)}; recomputed layer ${mib(a.recomputeBytes)}; backward scratch ${mib(a.backwardScratchBytes)}; other ${mib(a.otherBytes)}; vision forward peak ${mib(a.visionPeakBytes)}`,
    `activation peak ${mib(a.peakBytes)}; total ${gib(est.totalBytes)}`,
  ];
  return lines.join('\n');
}

/**
 * The model card's base-precision choice: the same request estimated with a BF16 base and with
 * a 4-bit NF4 base (vision tower per `quantizeVision`, default true), side by side.
 */
export function estimateBasePrecisions(req: Omit<MemoryRequest, 'quantize'>): { bf16: MemoryEstimate; nf4: MemoryEstimate } {
  return { bf16: estimateMemory({ ...req, quantize: undefined }), nf4: estimateMemory({ ...req, quantize: 'nf4' }) };
}
