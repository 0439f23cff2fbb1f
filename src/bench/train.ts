// Training throughput per method on the built-in tiny model (real Qwen vocabulary, synthetic
// grounding data): steps/s and tokens/s of SFT, DPO, GRPO and PPO steps, after one warm-up step.
import { Qwen2_5_VL } from '../model/qwen2_5_vl.ts';
import { tinySource } from '../model/tiny.ts';
import { targetRegex } from '../model/lora.ts';
import { loadDefaultTokenizer } from '../data/tokenizer.ts';
import { syntheticGrounding, syntheticPreferences, syntheticRlPrompts } from '../data/synthetic.ts';
import { Trainer, type Method, type TrainExample } from '../train/trainer.ts';
import { fmtBytes, memory } from '../gpu/tensor.ts';
import { trainOptionsOf } from '../session/run.ts';
import { DEFAULT_CONFIG } from '../config/config.ts';

/** the Trainer's view of the default config (the defaults are defined once, in src/config) */
const TRAIN_DEFAULTS = trainOptionsOf(DEFAULT_CONFIG);
import type { BenchRow } from './report.ts';

function examples(method: Method): TrainExample[] {
  if (method === 'sft') return syntheticGrounding({ count: 4, seed: 1 }).map((r) => ({ kind: 'sft', images: [r.image], messages: r.messages }));
  if (method === 'dpo') return syntheticPreferences({ count: 4, seed: 1 }).map((r) => ({ kind: 'dpo', images: [r.image], prompt: r.prompt, chosen: r.chosen, rejected: r.rejected }));
  return syntheticRlPrompts({ count: 4, seed: 1 }).map((r) => ({ kind: 'rl', images: [r.image], prompt: r.prompt, reference: r.reference }));
}

export async function benchTraining(opts: { steps: number; log: (s: string) => void; add?: (row: BenchRow) => void }): Promise<void> {
  const tok = await loadDefaultTokenizer();
  opts.log(`\ntraining steps on the built-in tiny model (vocab 151936, LoRA r 8 on every text projection; one 128x96 image per example; GRPO 4 generations and PPO 1, up to 32 new tokens):`);
  opts.log('method   steps/s   tokens/s   ms/step   gpu memory');
  for (const method of ['sft', 'dpo', 'grpo', 'ppo'] as Method[]) {
    const model = await Qwen2_5_VL.load(tinySource(), { lora: { r: 8, loraAlpha: 16, loraDropout: 0, useRslora: false, targetModules: targetRegex() }, loraSeed: 1 });
    const tr = new Trainer(model, tok, examples(method), {
      ...TRAIN_DEFAULTS, method, optim: { ...TRAIN_DEFAULTS.optim, lrScheduler: 'constant', maxSteps: opts.steps + 1 },
      grpo: { ...TRAIN_DEFAULTS.grpo, numGenerations: 4, maxNewTokens: 32, temperature: 1 }, ppo: { maxNewTokens: 32, temperature: 1 },
    });
    await tr.trainStep();
    let tokens = 0;
    const t0 = performance.now();
    const before = tr.history[tr.history.length - 1].num_tokens;
    for (let i = 0; i < opts.steps; i++) tokens = (await tr.trainStep()).num_tokens - before;
    const sec = (performance.now() - t0) / 1000;
    opts.add?.({ group: 'step', name: `demo model ${method} step`, shape: `${opts.steps} steps, ${tokens} tokens`, ours_ms: (1000 * sec) / opts.steps, peers: {}, extra: { steps_per_s: opts.steps / sec, tokens_per_s: tokens / sec } });
    opts.log(`${method.padEnd(8)} ${(opts.steps / sec).toFixed(3).padStart(7)}   ${(tokens / sec).toFixed(1).padStart(8)}   ${((1000 * sec) / opts.steps).toFixed(0).padStart(7)}   ${fmtBytes(memory.peak)}`);
    tr.dispose();
    model.dispose();
  }
}
