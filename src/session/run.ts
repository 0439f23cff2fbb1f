// A training run as both front ends drive it: the Trainer built from THE config (trainOptionsOf is
// the one place its view of the config is made, with no defaults of its own), resumed from the run's
// latest checkpoint, stepped, and checkpointed every config.optim.saveSteps steps. The worker adds
// its pause / stop state machine around step(); the CLI loops until done. With held-out examples
// (session/split.ts or a separate eval file) evalDue says when to call evaluate() (session/eval.ts):
// every config.eval.evalSteps steps and after the last.
import { Trainer, TrainingFault, type StepMetrics, type TrainExample, type TrainOptions } from '../train/trainer.ts';
import type { KV } from '../train/checkpoint.ts';
import type { Qwen2_5_VL } from '../model/qwen2_5_vl.ts';
import type { QwenTokenizer } from '../data/tokenizer.ts';
import type { TrainConfig } from '../config/config.ts';
import { evaluate, type EvalResult } from './eval.ts';

/** The Trainer's view of a config. `data` overrides the pixel bounds (a dataset's boxes are in its own frame). */
export function trainOptionsOf(c: TrainConfig, data: { minPixels: number; maxPixels: number } = c.data): TrainOptions {
  const o = c.optim;
  return {
    method: c.method,
    optim: {
      learningRate: o.learningRate, lrScheduler: o.lrScheduler, warmupSteps: o.warmupSteps, numEpochs: o.numEpochs, maxSteps: o.maxSteps,
      batchSize: o.batchSize, gradAccumSteps: o.gradAccumSteps, maxGradNorm: o.maxGradNorm, weightDecay: o.weightDecay, seed: o.seed,
      beta1: o.beta1, beta2: o.beta2, eps: o.eps,
    },
    data: { minPixels: data.minPixels, maxPixels: data.maxPixels, maxLength: c.data.maxLength },
    dpo: { beta: c.dpo.beta, labelSmoothing: c.dpo.labelSmoothing },
    grpo: { numGenerations: c.grpo.numGenerations, beta: c.grpo.beta, temperature: c.grpo.temperature, maxNewTokens: c.grpo.maxNewTokens, rewards: [...c.grpo.rewards], epsilon: c.grpo.epsilon },
    // trl's PPO names (train/ppo.ts PpoConfig); generation as GRPO's with one completion per prompt
    ppo: {
      cliprange: c.ppo.clipRange, vfCoef: c.ppo.vfCoef, klCoef: c.ppo.klCoef, gamma: c.ppo.gamma, lam: c.ppo.lam,
      temperature: c.ppo.temperature, maxNewTokens: c.ppo.maxNewTokens, rewards: [...c.ppo.rewards],
      numPpoEpochs: c.ppo.numPpoEpochs, numMiniBatches: c.ppo.numMiniBatches,
    },
    checkpointEvery: o.saveSteps,
  };
}

export interface RunOptions {
  runId: string;
  config: TrainConfig;
  model: Qwen2_5_VL;
  tokenizer: QwenTokenizer;
  examples: TrainExample[];
  /** where checkpoints go (IndexedDB in the browser, a folder for the CLI) */
  kv: KV;
  /** the smart_resize bounds the examples' boxes are in (default config.data) */
  pixels?: { minPixels: number; maxPixels: number };
  /** checkpoint every N steps (default config.optim.saveSteps; 0 = only when save() is called) */
  saveEvery?: number;
  /** held-out examples, evaluated every config.eval.evalSteps steps and at the end (none: no evaluation) */
  evalExamples?: TrainExample[];
}

export class Run {
  readonly trainer: Trainer;
  readonly saveEvery: number;
  /** step of the last checkpoint saved or restored (null: none yet) */
  checkpointStep: number | null = null;
  onCheckpoint?: (step: number) => void;

  constructor(private o: RunOptions) {
    this.trainer = new Trainer(o.model, o.tokenizer, o.examples, trainOptionsOf(o.config, o.pixels ?? o.config.data), o.runId);
    this.saveEvery = o.saveEvery ?? o.config.optim.saveSteps;
  }

  get step(): number {
    return this.trainer.step;
  }
  get totalSteps(): number {
    return this.trainer.totalSteps;
  }
  get done(): boolean {
    return this.trainer.done;
  }

  /**
   * Continue from the run's newest valid checkpoint (Trainer.resumeFrom): its step, and `message`
   * when a damaged newer one was skipped (it names both; the front end shows it). null: none.
   */
  async resume(): Promise<{ step: number; message?: string } | null> {
    const got = await this.trainer.resumeFrom(this.o.kv);
    if (!got) return null;
    this.checkpointStep = got.checkpoint.step;
    return { step: got.checkpoint.step, ...(got.message ? { message: got.message } : {}) };
  }

  /**
   * After a TrainingFault: the checkpoints newer than the fault's last good step are deleted
   * (Trainer.rollback), so `--resume` / Resume continue from a good one. Returns that step (null: none).
   */
  async rollback(fault: TrainingFault): Promise<number | null> {
    this.checkpointStep = (await this.trainer.rollback(this.o.kv, fault)) ?? null;
    return this.checkpointStep;
  }

  /** One optimizer step, then a checkpoint when one is due. */
  async trainStep(): Promise<StepMetrics> {
    const m = await this.trainer.trainStep();
    if (this.saveEvery > 0 && this.trainer.step % this.saveEvery === 0) await this.save();
    return m;
  }

  /** Whether an evaluation is due after the step just taken: every config.eval.evalSteps steps, and at the end. */
  get evalDue(): boolean {
    const n = this.o.config.eval.evalSteps;
    return !!this.o.evalExamples?.length && this.step > 0 && ((n > 0 && this.step % n === 0) || this.done);
  }

  /** Evaluate the held-out examples with the adapter as it is now (no gradients; the step is the trainer's). */
  async evaluate(onProgress?: (done: number, total: number) => void): Promise<EvalResult & { step: number }> {
    const r = await evaluate({ model: this.o.model, tokenizer: this.o.tokenizer, examples: this.o.evalExamples ?? [], config: this.o.config, pixels: this.o.pixels, onProgress });
    return { ...r, step: this.step };
  }

  /** Save a checkpoint now (Trainer.save refuses parameters a TrainingFault made untrusted). */
  async save(): Promise<void> {
    if (this.checkpointStep === this.trainer.step) return;
    await this.trainer.save(this.o.kv);
    this.checkpointStep = this.trainer.step;
    this.onCheckpoint?.(this.trainer.step);
  }

  dispose(): void {
    this.trainer.dispose();
  }
}
