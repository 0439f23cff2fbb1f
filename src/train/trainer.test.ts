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
import { Trainer, TrainingFault, lossSpike, LOSS_SPIKE, type TrainExample, type TrainOptions } from './trainer.ts';
import { MemoryKV, listCheckpoints, loadLatestCheckpoint } from './checkpoint.ts';
import { readMany, write } from '../gpu/tensor.ts';
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

/** every LoRA parameter and AdamW moment, read back */
async function state(tr: Trainer) {
  const sd = await tr.opt.stateDict();
  return [sd.params, sd.m, sd.v].flatMap((g) => Object.values(g).map((t) => t.data));
}
const same = (a: Float32Array[], b: Float32Array[]) => a.length === b.length && a.every((x, i) => Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(b[i].buffer, b[i].byteOffset, b[i].byteLength)));
const allFinite = (a: Float32Array[]) => a.every((x) => x.every(Number.isFinite));

describe('training faults', () => {
  it('lr 1e38: the overflowing step is discarded on the GPU (parameters and moments unchanged), never checkpointed; a lower lr resumes', async () => {
    const m = await model();
    const kv = new MemoryKV();
    const data = sft(2, 9);
    const tr = new Trainer(m, tok, data, opts({ maxSteps: 3, learningRate: 1e-3 }), 'lr38');
    await tr.trainStep();
    await tr.save(kv);
    const good = await state(tr);
    (tr.cfg.optim as { learningRate: number }).learningRate = 1e38;
    const err = await tr.trainStep().catch((e) => e);
    expect(err).toBeInstanceOf(TrainingFault);
    expect(err.kind).toBe('update-nonfinite');
    expect(err.message).toMatch(/^Step 2: the AdamW update would have made LoRA parameters or optimizer moments NaN\/Inf\. The step was discarded.*parameters of step 1 are the last good ones\. Lower the learning rate \(now 1\.00e\+38; try 1\.0e\+37\)/);
    expect([err.step, err.lastGoodStep, tr.step, tr.opt.stepCount, tr.position]).toEqual([2, 1, 1, 1, 1]);
    expect(same(await state(tr), good)).toBe(true);
    expect(await tr.rollback(kv, err)).toBe(1);
    const ck = await loadLatestCheckpoint(kv, 'lr38');
    expect(ck!.step).toBe(1);
    expect(allFinite([...Object.values(ck!.lora), ...Object.values(ck!.optimizer.m), ...Object.values(ck!.optimizer.v)].map((t) => t.data))).toBe(true);
    tr.dispose();
    // resume from the last good checkpoint at a sane lr: continues
    const m2 = await model();
    const again = new Trainer(m2, tok, data, opts({ maxSteps: 3, learningRate: 1e-3 }), 'lr38');
    expect(await again.resume(kv)).toBe(true);
    const s2 = await again.trainStep();
    expect(s2.step).toBe(2);
    expect(Number.isFinite(s2.loss)).toBe(true);
    again.dispose();
    m.dispose();
    m2.dispose();
  });

  it('lr 1e10: the saturated model (all gradients exactly 0, hence grad norm 0) is flagged at the next step; its checkpoint is dropped', async () => {
    const m = await model();
    const kv = new MemoryKV();
    const tr = new Trainer(m, tok, sft(2, 9), opts({ maxSteps: 4, learningRate: 1e10 }), 'lr10');
    const s1 = await tr.trainStep(); // B jumps from 0 to ±1e10: finite, so stored
    expect(s1.grad_norm).toBeGreaterThan(0);
    await tr.save(kv);
    const before = await state(tr);
    const err = await tr.trainStep().catch((e) => e);
    expect(err).toBeInstanceOf(TrainingFault);
    expect(err.kind).toBe('grad-vanished');
    expect(err.message).toMatch(/^Step 2: every LoRA gradient is exactly 0 although the loss \(11\.93\) has a gradient: the activations overflowed float32.*no trained step is trusted/);
    expect(err.lastGoodStep).toBe(0);
    expect(same(await state(tr), before)).toBe(true); // momentum alone no longer moves the parameters
    // the saturated state is never checkpointed, and the one saved at step 1 is dropped
    await expect(tr.save(kv)).rejects.toThrow(/not checkpointing step 1: step 2 failed and the parameters after step 0 are not trusted/);
    expect(await tr.rollback(kv, err)).toBeUndefined();
    expect(await listCheckpoints(kv, 'lr10')).toEqual([]);
    expect(await loadLatestCheckpoint(kv, 'lr10')).toBeUndefined();
    tr.dispose();
    m.dispose();
  });

  it('a loss far above its running median stops the run (default rule, after its warm-up), the step discarded', async () => {
    const m = await model();
    const tr = new Trainer(m, tok, sft(2, 9), opts({ maxSteps: 30, learningRate: 1e-3 }), 'spike');
    await tr.trainStep();
    // A run that had converged to 0.5 nats (as a resumed run's history would say): the tiny model's
    // next loss (~14 nats, near its ceiling) is then a 28× spike.
    const last = tr.history[0];
    for (let i = 0; i < LOSS_SPIKE.warmup + 2; i++) tr.history.push({ ...last, loss: 0.5 + 0.01 * (i % 3) });
    const before = await state(tr);
    const err = await tr.trainStep().catch((e) => e);
    expect(err).toBeInstanceOf(TrainingFault);
    expect(err.kind).toBe('loss-spike');
    expect(err.message).toMatch(/^Step 2: the loss 1\d\.\d\d is 2\d× the median 0\.5100 of the last 13 steps: the run is diverging\. The step was discarded and training stopped; no trained step is trusted/);
    expect(same(await state(tr), before)).toBe(true);
    expect([tr.step, tr.position, tr.opt.stepCount]).toEqual([1, 1, 1]);
    // off by choice: the same step trains
    const off = new Trainer(m, tok, sft(2, 9), opts({ maxSteps: 30, learningRate: 1e-3 }, { lossSpike: false }), 'spike-off');
    off.history.push(...tr.history);
    off.step = 1;
    expect(Number.isFinite((await off.trainStep()).loss)).toBe(true);
    off.dispose();
    tr.dispose();
    m.dispose();
  });

  it('the loss-spike rule: median of a window, factor and margin, warm-up', () => {
    const r = LOSS_SPIKE;
    const hist = Array.from({ length: 30 }, (_, i) => 1 + (i % 3) * 0.1);
    expect(lossSpike(hist.slice(0, r.warmup - 1), 100)).toBeUndefined(); // warm-up
    expect(lossSpike(hist, 11.5)).toBeCloseTo(1.1, 6); // > 10 × 1.1 and 10.4 nats above
    expect(lossSpike(hist, 10.9)).toBeUndefined();
    // a converged run (median 0.01): one harder example at 0.5 is 50× but only 0.49 nats: no stop
    expect(lossSpike(Array(20).fill(0.01), 0.5)).toBeUndefined();
    // one earlier spike in the window does not raise the bar (median, not mean)
    expect(lossSpike([...Array(19).fill(1), 500], 12)).toBe(1);
  });
});

describe('PPO', () => {
  it('takes steps with a value head, reports trl metrics, and checkpoints the head', async () => {
    const m = await model();
    const prompts = syntheticRlPrompts({ count: 2, seed: 6 }).map((r): TrainExample => ({ kind: 'rl', images: [r.image], prompt: r.prompt, reference: r.reference }));
    const tr = new Trainer(m, tok, prompts, opts({ maxSteps: 3 }, { method: 'ppo', ppo: { maxNewTokens: 4, temperature: 1, numPpoEpochs: 1, rewards: [{ name: 'length', weight: 1, fn: (c: string) => c.length / 10 }] } }), 'ppo');
    for (let i = 0; i < 2; i++) {
      const s = await tr.trainStep();
      expect(Number.isFinite(s.loss)).toBe(true);
      for (const k of ['objective/kl', 'objective/scores', 'policy/clipfrac_avg', 'loss/policy_avg', 'loss/value_avg', 'val/clipfrac_avg']) expect([k, Number.isFinite(s[k])]).toEqual([k, true]);
      expect(s.grad_norm).toBeGreaterThan(0);
    }
    expect(tr.valueHead!.w.some((x) => x !== 0)).toBe(true);
    // a step whose value-head update overflows is discarded whole: LoRA, moments and the head stay
    const head = { w: tr.valueHead!.w.slice(), m: tr.valueHead!.m.slice(), step: tr.valueHead!.step };
    const lora = await state(tr);
    (tr.cfg.optim as { learningRate: number }).learningRate = 1e38;
    const err = await tr.trainStep().catch((e) => e);
    expect(err).toBeInstanceOf(TrainingFault);
    expect([err.kind, err.step, err.lastGoodStep]).toEqual(['update-nonfinite', 3, 2]);
    expect(err.message).toMatch(/^Step 3: the AdamW update would have made the PPO value head \(v_head\) NaN\/Inf\. The step was discarded/);
    expect([Array.from(tr.valueHead!.w), Array.from(tr.valueHead!.m), tr.valueHead!.step]).toEqual([Array.from(head.w), Array.from(head.m), head.step]);
    expect(same(await state(tr), lora)).toBe(true);
    (tr.cfg.optim as { learningRate: number }).learningRate = 1e-3;
    const ck = await tr.checkpoint();
    expect(Array.from(ck.extra!['v_head.weight'].data)).toEqual(Array.from(tr.valueHead!.w));
    tr.dispose();
    m.dispose();
  });
});

describe('PPO epochs (trl num_ppo_epochs / num_mini_batches)', () => {
  const prompts = () => syntheticRlPrompts({ count: 2, seed: 6 }).map((r): TrainExample => ({ kind: 'rl', images: [r.image], prompt: r.prompt, reference: r.reference }));
  const length = [{ name: 'length', weight: 1, fn: (c: string) => c.length / 10 }];
  const ppo = (over: Partial<TrainOptions['optim']>, p: NonNullable<TrainOptions['ppo']>) => opts({ maxSteps: 3, ...over }, { method: 'ppo', ppo: { maxNewTokens: 4, temperature: 1, rewards: length, ...p } });
  const timing = new Set(['tokens_per_s', 'samples_per_s', 'gpu_bytes']);
  const stable = (s: Record<string, number>) => Object.fromEntries(Object.entries(s).filter(([k]) => !timing.has(k)));

  it('a moving policy is clipped: clipfrac > 0 and approxkl > 0 over 4 epochs × 2 mini-batches; AdamW counts every update', async () => {
    const m = await model();
    const tr = new Trainer(m, tok, prompts(), ppo({ learningRate: 3e-2 }, { cliprange: 0.2, numPpoEpochs: 4, numMiniBatches: 2 }), 'ppo-clip');
    expect(tr.perStep).toBe(2); // batch 1 × accumulation 1 × 2 mini-batches
    const s = await tr.trainStep();
    console.log(`PPO clip: policy/clipfrac_avg ${s['policy/clipfrac_avg']}, policy/approxkl_avg ${s['policy/approxkl_avg']}, loss/policy_avg ${s['loss/policy_avg']}, val/ratio ${s['val/ratio']}, val/ratio_var ${s['val/ratio_var']}`);
    expect(s['policy/clipfrac_avg']).toBeGreaterThan(0);
    expect(s['policy/approxkl_avg']).toBeGreaterThan(0);
    expect(s['val/ratio_var']).toBeGreaterThan(0);
    expect(s['loss/policy_avg']).not.toBe(0);
    expect(tr.opt.stepCount).toBe(8);
    expect(tr.valueHead!.step).toBe(8);
    expect((await tr.checkpoint()).optimizerStep).toBe(8);
    tr.dispose();
    m.dispose();
  });

  it('a fault in a later update of the step undoes its earlier updates too (LoRA, moments, AdamW count, value head)', async () => {
    const m = await model();
    const tr = new Trainer(m, tok, prompts(), ppo({ learningRate: 1e-3 }, { numPpoEpochs: 4 }), 'ppo-fault');
    await tr.trainStep();
    const lora = await state(tr), head = tr.valueHead!.w.slice(), count = tr.opt.stepCount;
    (tr.cfg.optim as { learningRate: number }).learningRate = 1e38; // the first update passes, the next forward overflows
    const err = await tr.trainStep().catch((e) => e);
    expect(err).toBeInstanceOf(TrainingFault);
    expect([err.step, err.lastGoodStep]).toEqual([2, 1]);
    expect(same(await state(tr), lora)).toBe(true);
    expect([tr.opt.stepCount, tr.step, Array.from(tr.valueHead!.w)]).toEqual([count, 1, Array.from(head)]);
    tr.dispose();
    m.dispose();
  });

  it('one epoch, one mini-batch: ratio 1, nothing clipped (the old behaviour)', async () => {
    const m = await model();
    const tr = new Trainer(m, tok, prompts(), ppo({ learningRate: 3e-2, batchSize: 2 }, { numPpoEpochs: 1, numMiniBatches: 1 }), 'ppo-one');
    const s = await tr.trainStep();
    expect([s['policy/clipfrac_avg'], s['policy/approxkl_avg'], s['val/ratio']]).toEqual([0, 0, 1]);
    expect(tr.opt.stepCount).toBe(1);
    tr.dispose();
    m.dispose();
  });

  it('resume after a PPO checkpoint reproduces the uninterrupted run exactly (metrics, LoRA, moments, value head)', async () => {
    const o = ppo({ learningRate: 1e-2, maxSteps: 2 }, { numPpoEpochs: 2, numMiniBatches: 2 });
    const m1 = await model();
    const straight = new Trainer(m1, tok, prompts(), o, 'ppo-straight');
    const want: Record<string, number>[] = [];
    for (let i = 0; i < 2; i++) want.push(stable(await straight.trainStep()));
    const wantState = await state(straight), wantHead = straight.valueHead!.w.slice();
    straight.dispose();
    m1.dispose();

    const kv = new MemoryKV();
    const m2 = await model();
    const first = new Trainer(m2, tok, prompts(), o, 'ppo-resumed');
    await first.trainStep();
    await first.save(kv);
    first.dispose();
    m2.dispose();

    const m3 = await Qwen2_5_VL.load(source, { lora: LORA, loraSeed: 99 });
    const second = new Trainer(m3, tok, prompts(), o, 'ppo-resumed');
    expect(await second.resume(kv)).toBe(true);
    expect([second.step, second.opt.stepCount]).toEqual([1, 4]);
    const got = stable(await second.trainStep());
    expect(got).toEqual(want[1]);
    expect(same(await state(second), wantState)).toBe(true);
    expect(Buffer.from(second.valueHead!.w.buffer).equals(Buffer.from(wantHead.buffer))).toBe(true);

    // A checkpoint from before optimizerStep existed: AdamW's count falls back to the trainer step.
    const old = await second.checkpoint();
    delete old.optimizerStep;
    second.restore(old);
    expect(second.opt.stepCount).toBe(2);
    second.dispose();
    m3.dispose();
  });
});
