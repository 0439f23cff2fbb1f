// QLoRA on the built-in tiny model: SFT with an NF4 base (quantised on load) lowers the loss like
// the BF16 base does — same seed, same data, same steps — and the adapter it exports is an ordinary
// peft adapter that names the full-precision base and loads onto it. PATCHWORK_NF4_STEPS (default
// 6) sets the steps; the report's curves are the 20-step run.
import { beforeAll, describe, expect, it } from 'vitest';
import { nodeGpu } from '../gpu/node.ts';
import { Qwen2_5_VL } from '../model/qwen2_5_vl.ts';
import { tinySource } from '../model/tiny.ts';
import { targetRegex } from '../model/lora.ts';
import { fullPrecisionBaseId } from '../model/quant.ts';
import { loadDefaultTokenizer, type QwenTokenizer } from '../data/tokenizer.ts';
import { syntheticGrounding } from '../data/synthetic.ts';
import { exportAdapterFiles, loadAdapterFiles } from '../model/adapterFiles.ts';
import { Trainer, type TrainExample, type TrainOptions } from './trainer.ts';
import { trainOptionsOf } from '../session/run.ts';
import { DEFAULT_CONFIG } from '../config/config.ts';

const TRAIN_DEFAULTS = trainOptionsOf(DEFAULT_CONFIG);

const STEPS = Number((globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.PATCHWORK_NF4_STEPS) || 6;
const LORA = { r: 8, loraAlpha: 16, loraDropout: 0, useRslora: false, targetModules: targetRegex(), baseModelNameOrPath: 'patchwork-builtin-tiny' };
let tok: QwenTokenizer;
beforeAll(async () => {
  await nodeGpu();
  tok = await loadDefaultTokenizer();
});

const opts: TrainOptions = { ...TRAIN_DEFAULTS, optim: { ...TRAIN_DEFAULTS.optim, learningRate: 5e-3, lrScheduler: 'constant', maxSteps: STEPS, seed: 7 } };
const data = (): TrainExample[] => syntheticGrounding({ count: 2, seed: 5 }).map((r) => ({ kind: 'sft', images: [r.image], messages: r.messages }));

async function curve(quantize?: 'nf4'): Promise<{ losses: number[]; m: Qwen2_5_VL }> {
  const m = await Qwen2_5_VL.load(tinySource(), { lora: LORA, loraSeed: 3, quantize });
  const tr = new Trainer(m, tok, data(), opts, quantize ?? 'bf16');
  const losses: number[] = [];
  while (!tr.done) losses.push((await tr.trainStep()).loss);
  return { losses, m };
}

describe('QLoRA SFT on the tiny model', () => {
  it(`NF4 base lowers the loss like the BF16 base (${STEPS} steps, same seed and data); the adapter is plain peft`, async () => {
    const bf = await curve();
    bf.m.dispose();
    const q = await curve('nf4');
    console.log(`SFT loss, BF16 base: ${bf.losses.map((l) => l.toFixed(3)).join(' ')}`);
    console.log(`SFT loss, NF4 base:  ${q.losses.map((l) => l.toFixed(3)).join(' ')}`);
    const drop = (l: number[]) => 1 - l[l.length - 1] / l[0];
    expect(q.losses.every(Number.isFinite)).toBe(true);
    expect(drop(bf.losses)).toBeGreaterThan(0.2);
    expect(drop(q.losses)).toBeGreaterThan(0.8 * drop(bf.losses));

    // the adapter: ordinary peft files naming the full-precision base, and it loads onto that base
    const ad = await exportAdapterFiles(q.m);
    expect(ad.config.base_model_name_or_path).toBe('patchwork-builtin-tiny');
    expect(ad.config.peft_type).toBe('LORA');
    const base = await Qwen2_5_VL.load(tinySource());
    await loadAdapterFiles(base, { 'adapter_model.safetensors': ad.safetensors, 'adapter_config.json': ad.config });
    expect((await base.adapter()).modules.size).toBeGreaterThan(0);
    base.dispose();
    q.m.dispose();
  }, 900_000);

  it('names the full-precision base of a pre-quantised repo', () => {
    expect(fullPrecisionBaseId('unsloth/Qwen2.5-VL-3B-Instruct-bnb-4bit')).toBe('unsloth/Qwen2.5-VL-3B-Instruct');
    expect(fullPrecisionBaseId('unsloth/Qwen2.5-VL-3B-Instruct-unsloth-bnb-4bit')).toBe('unsloth/Qwen2.5-VL-3B-Instruct');
    expect(fullPrecisionBaseId('Qwen/Qwen2.5-VL-3B-Instruct')).toBe('Qwen/Qwen2.5-VL-3B-Instruct');
  });
});
