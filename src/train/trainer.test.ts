// The training loop on the built-in tiny model (real Qwen vocabulary and tokenizer) and synthetic
// grounding data: every method takes real steps; a resumed run equals an uninterrupted one; a NaN
// stops the run and keeps the last good checkpoint.
import { beforeAll, describe, expect, it } from 'vitest';
import { nodeGpu } from '../gpu/node.ts';
import { Qwen2_5_VL } from '../model/qwen2_5_vl.ts';
import { tinySource } from '../model/tiny.ts';
import { targetRegex } from '../model/lora.ts';
import { loadDefaultTokenizer, type QwenTokenizer } from '../data/tokenizer.ts';
import { syntheticGrounding, syntheticPreferences, syntheticRlPrompts } from '../data/synthetic.ts';
import { Trainer, TrainingFault, type TrainExample, type TrainOptions } from './trainer.ts';
import { MemoryKV, loadLatestCheckpoint } from './checkpoint.ts';
import { trainOptionsOf } from '../session/run.ts';
import { DEFAULT_CONFIG } from '../config/config.ts';

/** the Trainer's view of the default config (the defaults are defined once, in src/config) */
const TRAIN_DEFAULTS = trainOptionsOf(DEFAULT_CONFIG);

const LORA = { r: 4, loraAlpha: 8, loraDropout: 0, useRslora: false, targetModules: targetRegex() };
let tok: QwenTokenizer;
const source = tinySource();

beforeAll(async () => {
  await nodeGpu();
  tok = await loadDefaultTokenizer();
});

function opts(over: Partial<TrainOptions['optim']> = {}, rest: Partial<TrainOptions> = {}): TrainOptions {
  return { ...TRAIN_DEFAULTS, ...rest, optim: { ...TRAIN_DEFAULTS.optim, learningRate: 1e-3, lrScheduler: 'constant', maxSteps: 4, ...over } };
}

const sft = (n: number, seed = 1): TrainExample[] => syntheticGrounding({ count: n, seed }).map((r) => ({ kind: 'sft', images: [r.image], messages: r.messages }));

async function model() {
  return Qwen2_5_VL.load(source, { lora: LORA, loraSeed: 3 });
}

describe('Trainer', () => {
  it('SFT: finite losses, trl metrics, LoRA B moves from zero', async () => {
    const m = await model();
    const tr = new Trainer(m, tok, sft(3), opts({ maxSteps: 2 }));
    const s1 = await tr.trainStep();
    const s2 = await tr.trainStep();
    for (const s of [s1, s2]) {
      expect(Number.isFinite(s.loss)).toBe(true);
      expect(s.grad_norm).toBeGreaterThan(0);
      expect(s.mean_token_accuracy).toBeGreaterThanOrEqual(0);
      expect(s.tokens_per_s).toBeGreaterThan(0);
    }
    expect(s2.step).toBe(2);
    const sd = await tr.opt.stateDict();
    const bKey = Object.keys(sd.params).find((k) => k.endsWith('lora_B.weight'))!;
    expect(sd.params[bKey].data.some((x) => x !== 0)).toBe(true);
    tr.dispose();
    m.dispose();
  });

  it('a resumed run reaches the same loss at step N as an uninterrupted one (with LoRA dropout)', async () => {
    const data = sft(3, 5);
    const model = (seed: number) => Qwen2_5_VL.load(source, { lora: { ...LORA, loraDropout: 0.1 }, loraSeed: seed });
    const o = opts({ maxSteps: 4, gradAccumSteps: 1 });
    const m1 = await model(3);
    const straight = new Trainer(m1, tok, data, o, 'straight');
    const losses: number[] = [];
    for (let i = 0; i < 4; i++) losses.push((await straight.trainStep()).loss);
    straight.dispose();
    m1.dispose();

    const kv = new MemoryKV();
    const m2 = await model(3);
    const first = new Trainer(m2, tok, data, o, 'resumed');
    await first.trainStep();
    await first.trainStep();
    await first.save(kv);
    first.dispose();
    m2.dispose();

    // A fresh model (as after a reload) with a different LoRA init: everything comes from the checkpoint.
    const m3 = await model(99);
    const second = new Trainer(m3, tok, data, o, 'resumed');
    expect(await second.resume(kv)).toBe(true);
    expect(second.step).toBe(2);
    const l3 = (await second.trainStep()).loss;
    const l4 = (await second.trainStep()).loss;
    expect(Math.abs(l3 - losses[2])).toBeLessThan(1e-5);
    expect(Math.abs(l4 - losses[3])).toBeLessThan(1e-5);
    second.dispose();
    m3.dispose();
  });

  it('a NaN loss stops the run with a clear message; the last good checkpoint stays', async () => {
    const m = await model();
    const kv = new MemoryKV();
    const tr = new Trainer(m, tok, sft(2, 9), opts({ maxSteps: 5, learningRate: 1e-3, maxGradNorm: 0 }), 'nan');
    await tr.trainStep();
    await tr.save(kv);
    // Blow the adapter up: the next forward overflows to Inf/NaN.
    for (const p of m.loraParams()) {
      const { write } = await import('../gpu/tensor.ts');
      write(p.param, new Float32Array(p.param.numel).fill(3e38));
    }
    await expect(tr.trainStep()).rejects.toThrow(TrainingFault);
    await expect(tr.trainStep()).rejects.toThrow(/NaN|Inf|loss became/);
    const ck = await loadLatestCheckpoint(kv, 'nan');
    expect(ck?.step).toBe(1);
    expect(Object.values(ck!.lora).every((t) => t.data.every(Number.isFinite))).toBe(true);
    tr.dispose();
    m.dispose();
  });

  it('DPO and GRPO steps run with their trl metrics', async () => {
    const m = await model();
    const pref = syntheticPreferences({ count: 1, seed: 2 }).map((r): TrainExample => ({ kind: 'dpo', images: [r.image], prompt: r.prompt, chosen: r.chosen, rejected: r.rejected }));
    const dpo = new Trainer(m, tok, pref, opts({ maxSteps: 1 }, { method: 'dpo' }));
    const d = await dpo.trainStep();
    expect(Number.isFinite(d.loss)).toBe(true);
    expect(d.loss).toBeCloseTo(Math.log(2), 5); // LoRA B starts at zero: policy == reference
    for (const k of ['rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins', 'logps/chosen', 'logps/rejected']) expect(d).toHaveProperty([k]);
    dpo.dispose();

    const prompts = syntheticRlPrompts({ count: 1, seed: 4 }).map((r): TrainExample => ({ kind: 'rl', images: [r.image], prompt: r.prompt, reference: r.reference }));
    const grpo = new Trainer(m, tok, prompts, opts({ maxSteps: 1 }, { method: 'grpo', grpo: { ...TRAIN_DEFAULTS.grpo, numGenerations: 2, maxNewTokens: 4, temperature: 1, beta: 0.04 } }));
    const g = await grpo.trainStep();
    expect(Number.isFinite(g.loss)).toBe(true);
    for (const k of ['reward', 'reward_std', 'frac_reward_zero_std', 'rewards/iou/mean', 'kl', 'completions/mean_length']) expect(g).toHaveProperty([k]);
    grpo.dispose();
    m.dispose();
  });
});

describe('PPO', () => {
  it('takes steps with a value head, reports trl metrics, and checkpoints the head', async () => {
    const m = await model();
    const prompts = syntheticRlPrompts({ count: 2, seed: 6 }).map((r): TrainExample => ({ kind: 'rl', images: [r.image], prompt: r.prompt, reference: r.reference }));
    const tr = new Trainer(m, tok, prompts, opts({ maxSteps: 2 }, { method: 'ppo', ppo: { maxNewTokens: 4, temperature: 1, rewards: [{ name: 'length', weight: 1, fn: (c: string) => c.length / 10 }] } }), 'ppo');
    for (let i = 0; i < 2; i++) {
      const s = await tr.trainStep();
      expect(Number.isFinite(s.loss)).toBe(true);
      for (const k of ['objective/kl', 'objective/scores', 'policy/clipfrac_avg', 'loss/policy_avg', 'loss/value_avg', 'val/clipfrac_avg']) expect([k, Number.isFinite(s[k])]).toEqual([k, true]);
      expect(s.grad_norm).toBeGreaterThan(0);
    }
    expect(tr.valueHead!.w.some((x) => x !== 0)).toBe(true);
    const ck = await tr.checkpoint();
    expect(Array.from(ck.extra!['v_head.weight'].data)).toEqual(Array.from(tr.valueHead!.w));
    tr.dispose();
    m.dispose();
  });
});
