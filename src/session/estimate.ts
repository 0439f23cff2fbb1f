// The memory estimate of a run (model/memory.ts, checked against this adapter's limits) and a rough
// FLOP count per optimizer step, for the studio's estimate and the CLI's refusal of what cannot fit.
import { gpu } from '../gpu/device.ts';
import { Qwen2_5_VL } from '../model/qwen2_5_vl.ts';
import type { QwenVLConfig } from '../model/config.ts';
import type { LoraConfig } from '../model/lora.ts';
import { estimateBasePrecisions, formatEstimate, gib } from '../model/memory.ts';
import { parseQuantizationConfig } from '../model/quant.ts';
import type { TrainConfig } from '../config/config.ts';
import type { Plan } from './examples.ts';

/** The memory estimate of one LoRA step (src/model/memory.ts), in numbers and in words. */
export interface MemoryReport {
  /** fits this adapter's buffer limits (and the budget, when one was given) */
  ok: boolean;
  /** one line: the total, or why it cannot train here, with the numbers */
  message: string;
  totalBytes: number;
  weightsBytes: number;
  loraBytes: number;
  activationBytes: number;
  seqLen: number;
  imageTokens: number;
  recompute: boolean;
  /** formatEstimate(): the breakdown line by line */
  text: string;
  /** the base this run loads: NF4 when model.quantize is nf4 or the checkpoint is bitsandbytes 4-bit */
  base: 'bf16' | 'nf4';
  /** config.json has a bitsandbytes 4-bit quantization_config: the model loads as NF4 whatever model.quantize says */
  prequantized: boolean;
  /** the model card's side by side: the same step's total with a BF16 base and with an NF4 base
   *  (estimateBasePrecisions); no bf16 figure for a pre-quantised checkpoint, which only loads as NF4 */
  byPrecision: { bf16?: number; nf4: number };
}

export function memoryReport(config: QwenVLConfig, lora: LoraConfig, plan: Plan, quantize: { quantize?: 'nf4'; quantizeVision?: boolean } = {}): MemoryReport {
  // a bitsandbytes 4-bit checkpoint loads as NF4 regardless (model/quant.ts); an unsupported one is refused below
  let pre: ReturnType<typeof parseQuantizationConfig>;
  try {
    pre = parseQuantizationConfig(config);
  } catch {
    pre = undefined;
  }
  const both = estimateBasePrecisions({
    config, lora, images: plan.images, textTokens: plan.textTokens, recompute: false,
    quantizeVision: quantize.quantizeVision ?? true, ...(pre ? { doubleQuant: pre.doubleQuant } : {}),
  });
  const base = quantize.quantize === 'nf4' || pre ? 'nf4' : 'bf16';
  const est = base === 'nf4' ? both.nf4 : both.bf16;
  let ok = true;
  let message = `A LoRA step of ${est.seqLen} tokens (${est.imageTokens} image) needs about ${gib(est.totalBytes)}${base === 'nf4' ? ' with the 4-bit NF4 base' : ''}: weights ${gib(est.weights.bytes)}, LoRA + AdamW ${gib(est.lora.bytes)}, activations ${gib(est.activations.peakBytes)}.`;
  try {
    Qwen2_5_VL.checkMemory(config, gpu().limits, { lora, plan, ...(quantize.quantize ? quantize : { quantizeVision: quantize.quantizeVision }) });
  } catch (e) {
    ok = false;
    message = (e as Error).message;
  }
  return {
    ok, message, totalBytes: est.totalBytes, weightsBytes: est.weights.bytes, loraBytes: est.lora.bytes, activationBytes: est.activations.peakBytes,
    seqLen: est.seqLen, imageTokens: est.imageTokens, recompute: est.recompute, text: formatEstimate(est),
    base, prequantized: !!pre, byPrecision: pre ? { nf4: both.nf4.totalBytes } : { bf16: both.bf16.totalBytes, nf4: both.nf4.totalBytes },
  };
}

/**
 * Rough FLOPs of one training example: decoder matmuls ×3 (forward, input grads, LoRA grads ≈ a
 * second backward pass through frozen weights), attention, the scored lm_head rows ×3, the frozen
 * vision tower forward once; DPO runs two sequences with a reference pass each, GRPO G sampled
 * sequences plus their generation.
 */
export function stepFlops(cfg: QwenVLConfig, c: TrainConfig, plan: Plan): number {
  const t = cfg.text, v = cfg.vision;
  const q = t.numAttentionHeads * t.headDim, kv = t.numKeyValueHeads * t.headDim;
  const perTok = t.numHiddenLayers * 2 * (t.hiddenSize * (q + 2 * kv) + q * t.hiddenSize + 3 * t.hiddenSize * t.intermediateSize);
  let patches = 0;
  for (const im of plan.images) patches += (im.height / v.patchSize) * (im.width / v.patchSize);
  const L = plan.textTokens + patches / v.spatialMergeSize ** 2;
  const attn = t.numHiddenLayers * 4 * L * L * q;
  const vParams = v.depth * (4 * v.hiddenSize ** 2 + 3 * v.hiddenSize * v.intermediateSize);
  const vision = 2 * vParams * patches;
  const answer = Math.min(64, plan.textTokens);
  const lmHead = 2 * t.vocabSize * t.hiddenSize * answer;
  const train = 3 * (perTok * L + attn + lmHead);
  const ref = perTok * L + attn + lmHead;
  if (c.method === 'dpo') return vision + 2 * (train + ref);
  if (c.method === 'grpo' || c.method === 'ppo') {
    const g = c.method === 'grpo' ? c.grpo : c.ppo;
    const G = c.method === 'grpo' ? c.grpo.numGenerations : 1;
    const gen = g.maxNewTokens * (perTok + 2 * t.vocabSize * t.hiddenSize) * G;
    return vision + gen + G * (train + (c.grpo.beta > 0 ? ref : 0));
  }
  return vision + train;
}
