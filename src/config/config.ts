// THE training configuration: one type, one set of defaults, for the studio (Train panel, stored in
// IndexedDB by store/runConfig.ts), the CLI (--config JSON and flags), the session that assembles a
// run (session/) and the cluster bundle (export/cluster.ts). Names follow peft / trl in camelCase
// (r, alpha → lora_alpha, targetModules → target_modules, useRslora → use_rslora, learningRate →
// learning_rate, ...), so every value maps one to one onto train.py's argparse defaults; TRL_NAMES
// below is that map, and the CLI accepts those names too. validate.ts checks a config.
//
// Imports nothing: every front end and the session may use it.

export type Method = 'sft' | 'dpo' | 'grpo' | 'ppo';
export type ModelSource = 'tiny' | 'hub' | 'local';
export type LrScheduler = 'constant' | 'linear' | 'cosine';
export type Reward = 'iou' | 'format' | 'exact';
export type Quantize = 'none' | 'nf4';

export const METHODS: readonly Method[] = ['sft', 'dpo', 'grpo', 'ppo'];
export const LR_SCHEDULERS: readonly LrScheduler[] = ['constant', 'linear', 'cosine'];
export const REWARDS: readonly Reward[] = ['iou', 'format', 'exact'];
export const DECODER_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;

export interface LocalFolder {
  /** the folder's name (studio) or path (CLI) */
  name: string;
  /** file names found at the top of the folder */
  files: string[];
}

export interface TrainConfig {
  model: {
    source: ModelSource;
    hubId: string;
    /** Hugging Face endpoint (a mirror such as https://hf-mirror.com works too) */
    endpoint: string;
    revision: string;
    local: LocalFolder | null;
    /** 'nf4': the frozen base Linear weights are stored as bitsandbytes NF4 (QLoRA); LoRA stays f32 */
    quantize: Quantize;
    /** with nf4: the vision tower's Linear layers too (bitsandbytes quantises every Linear); false keeps them BF16 */
    quantizeVision: boolean;
  };
  method: Method;
  lora: { r: number; alpha: number; dropout: number; targetModules: string[]; useRslora: boolean };
  optim: {
    learningRate: number;
    lrScheduler: LrScheduler;
    warmupSteps: number;
    numEpochs: number;
    /** 0 = run numEpochs over the dataset */
    maxSteps: number;
    /** examples per micro-step (their gradients are accumulated; one sequence goes through the model at a time) */
    batchSize: number;
    gradAccumSteps: number;
    maxGradNorm: number;
    weightDecay: number;
    seed: number;
    /** save a checkpoint every N optimizer steps (0 = only on pause, stop and the end) */
    saveSteps: number;
    beta1: number;
    beta2: number;
    eps: number;
  };
  data: { minPixels: number; maxPixels: number; maxLength: number };
  dpo: { beta: number; labelSmoothing: number };
  grpo: { numGenerations: number; beta: number; temperature: number; maxNewTokens: number; rewards: Reward[]; epsilon: number };
  ppo: {
    clipRange: number; vfCoef: number; klCoef: number; gamma: number; lam: number; temperature: number; maxNewTokens: number; rewards: Reward[];
    /** trl num_ppo_epochs: optimisation passes over each rollout batch (trl default 4) */
    numPpoEpochs: number;
    /** trl num_mini_batches: optimizer steps per PPO epoch; a rollout is batchSize × gradAccumSteps × numMiniBatches prompts */
    numMiniBatches: number;
  };
  /** held-out evaluation (session/split.ts, session/eval.ts) */
  eval: {
    /** images held out, split by image: 0 = none; 0 < x < 1 a fraction of the images; a whole number ≥ 1 a count */
    evalSplit: number;
    /** evaluate every N optimizer steps (trl eval_steps, eval_strategy "steps"); 0 = only at the end */
    evalSteps: number;
    /** greedy decoding length of the grounding / reward evaluation */
    evalMaxNewTokens: number;
  };
}

/**
 * The defaults, defined once. Where trl / peft / transformers have a default that suits LoRA on one
 * GPU it is theirs, so a run exported to the cluster bundle trains the same thing there:
 * - lora r 16, alpha 32, dropout 0.05: trl's ModelConfig (lora_r, lora_alpha, lora_dropout), the
 *   values its VLM SFT scripts use; decoder projections only (peft "all-linear" minus the vision tower).
 * - learning rate 2e-4: trl's recommendation for LoRA (its SFTConfig 2e-5 is for full fine-tuning);
 *   linear schedule, warmup 0, gradient accumulation 1, max grad norm 1, weight decay 0, AdamW
 *   betas (0.9, 0.999), eps 1e-8, seed 42, 3 epochs: transformers' TrainingArguments defaults.
 * - batch size 1 (transformers: 8): one browser GPU holds one sequence's activations at a time.
 * - saveSteps 50 (transformers: 500): a browser tab or a laptop run is short and easily killed.
 * - max length 2048 (trl: 1024): the image tokens count (up to 512 at the default max pixels);
 *   over-long examples are refused up front, never truncated.
 * - pixels: the Qwen2.5-VL processor's min_pixels 3136; max_pixels 512·28·28 (the processor's
 *   12845056 would not fit a browser GPU).
 * - DPO beta 0.1, label smoothing 0 (trl); GRPO beta 0 and epsilon 0.2 (trl's defaults; beta 0 also
 *   because the reference is the adapter switched off, i.e. the base model, so after SFT a KL term would
 *   undo it); 4 generations (trl: 8) and temperature 0.9 (trl: 1.0) to keep a browser step short;
 *   max new tokens 128 for GRPO and PPO alike (a box answer is ~30 tokens).
 * - PPO: trl's PPOConfig cliprange 0.2, vf_coef 0.1, kl_coef 0.05, gamma 1, lam 0.95.
 * - eval: no split by default (trl's eval_strategy "no"); when there is one, every 50 steps (as
 *   saveSteps) and at the end; greedy decoding of 128 tokens as GRPO's completions.
 */
export const DEFAULT_CONFIG: TrainConfig = {
  model: { source: 'tiny', hubId: 'Qwen/Qwen2.5-VL-3B-Instruct', endpoint: 'https://huggingface.co', revision: 'main', local: null, quantize: 'none', quantizeVision: true },
  method: 'sft',
  lora: { r: 16, alpha: 32, dropout: 0.05, targetModules: [...DECODER_TARGETS], useRslora: false },
  optim: {
    learningRate: 2e-4, lrScheduler: 'linear', warmupSteps: 0, numEpochs: 3, maxSteps: 0, batchSize: 1, gradAccumSteps: 1,
    maxGradNorm: 1, weightDecay: 0, seed: 42, saveSteps: 50, beta1: 0.9, beta2: 0.999, eps: 1e-8,
  },
  data: { minPixels: 3136, maxPixels: 512 * 28 * 28, maxLength: 2048 },
  dpo: { beta: 0.1, labelSmoothing: 0 },
  grpo: { numGenerations: 4, beta: 0, temperature: 0.9, maxNewTokens: 128, rewards: ['iou', 'format'], epsilon: 0.2 },
  ppo: { clipRange: 0.2, vfCoef: 0.1, klCoef: 0.05, gamma: 1, lam: 0.95, temperature: 0.9, maxNewTokens: 128, rewards: ['iou', 'format'], numPpoEpochs: 4, numMiniBatches: 1 },
  eval: { evalSplit: 0, evalSteps: 50, evalMaxNewTokens: 128 },
};

/** trl / peft / transformers argument names (train.py's flags) → the config path they set. */
export const TRL_NAMES: Record<string, string> = {
  lora_r: 'lora.r',
  lora_alpha: 'lora.alpha',
  lora_dropout: 'lora.dropout',
  target_modules: 'lora.targetModules',
  use_rslora: 'lora.useRslora',
  learning_rate: 'optim.learningRate',
  lr_scheduler_type: 'optim.lrScheduler',
  warmup_steps: 'optim.warmupSteps',
  num_train_epochs: 'optim.numEpochs',
  max_steps: 'optim.maxSteps',
  per_device_train_batch_size: 'optim.batchSize',
  gradient_accumulation_steps: 'optim.gradAccumSteps',
  max_grad_norm: 'optim.maxGradNorm',
  weight_decay: 'optim.weightDecay',
  seed: 'optim.seed',
  save_steps: 'optim.saveSteps',
  adam_beta1: 'optim.beta1',
  adam_beta2: 'optim.beta2',
  adam_epsilon: 'optim.eps',
  min_pixels: 'data.minPixels',
  max_pixels: 'data.maxPixels',
  max_length: 'data.maxLength',
  dpo_beta: 'dpo.beta',
  label_smoothing: 'dpo.labelSmoothing',
  num_generations: 'grpo.numGenerations',
  grpo_beta: 'grpo.beta',
  temperature: 'grpo.temperature',
  max_completion_length: 'grpo.maxNewTokens',
  epsilon: 'grpo.epsilon',
  rewards: 'grpo.rewards',
  num_ppo_epochs: 'ppo.numPpoEpochs',
  num_mini_batches: 'ppo.numMiniBatches',
  // trl's eval_strategy is "steps" when evalSteps > 0, else evaluation at the end only
  eval_steps: 'eval.evalSteps',
};

/**
 * Images held out for evaluation out of `images`: a fraction rounds to the nearest whole image
 * (at least 1 when the fraction is > 0); a count is itself; 0 = none.
 */
export function evalImageCount(e: TrainConfig['eval'], images: number): number {
  const s = e.evalSplit;
  if (!(s > 0)) return 0;
  return s < 1 ? Math.max(1, Math.round(s * images)) : Math.floor(s);
}

/** LoRA scale applied to B·A: alpha/r, or alpha/√r with rsLoRA. */
export function loraScale(l: TrainConfig['lora']): number {
  return l.useRslora ? l.alpha / Math.sqrt(l.r) : l.alpha / l.r;
}

/** Optimizer steps of a run over `examples` examples (maxSteps, else epochs × examples ÷ examples per step). */
export function totalSteps(c: TrainConfig, examples: number): number {
  const o = c.optim;
  // PPO's rollout is batch × accumulation × num_mini_batches prompts (trl's batch_size), as the Trainer's perStep
  const mini = c.method === 'ppo' ? Math.max(1, c.ppo.numMiniBatches) : 1;
  return o.maxSteps > 0 ? o.maxSteps : Math.ceil((o.numEpochs * examples) / (Math.max(1, o.batchSize) * Math.max(1, o.gradAccumSteps) * mini));
}

/** What a Hugging Face model folder needs that `files` (top-level names) lacks. */
export function missingModelFiles(files: string[]): string[] {
  const has = (n: string) => files.includes(n);
  const missing: string[] = [];
  if (!has('config.json')) missing.push('config.json');
  if (!has('tokenizer.json')) missing.push('tokenizer.json');
  if (!files.some((f) => f.endsWith('.safetensors'))) missing.push('*.safetensors weights');
  return missing;
}

export type DeepPartial<T> = { [K in keyof T]?: T[K] extends unknown[] ? T[K] : T[K] extends object | null ? DeepPartial<T[K]> : T[K] };

/** `patch` laid over `base`, section by section (arrays and null replace; objects merge). */
export function mergeConfig<T>(base: T, patch: DeepPartial<T>): T {
  const out = { ...base } as Record<string, unknown>;
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (v === undefined) continue;
    const b = out[k];
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && b && typeof b === 'object' && !Array.isArray(b) ? mergeConfig(b, v as DeepPartial<typeof b>) : v;
  }
  return out as T;
}
