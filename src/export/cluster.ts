// "Train on a cluster": the files of a zip that trains THE SAME LoRA as the Train panel on GPUs with
// trl + accelerate + DeepSpeed ZeRO-2, when a user outgrows one browser. Pure functions (no React,
// no GPU); the UI zips the returned files with fflate.
//
//   train.jsonl             the dataset records as given (trl conversational, images as `images/<name>`,
//                           relative to the JSONL's folder: `npm run train -- --data train.jsonl` reads it too)
//   images/*                the image files
//   train.py                a self-contained script; every Train-panel value is an argparse default
//   accelerate_config.yaml  DeepSpeed ZeRO-2, bf16 (num_processes = number of GPUs, a placeholder)
//   ds_zero2.json           the same ZeRO-2 settings for launchers that take a DeepSpeed JSON
//   requirements.txt        minimum versions
//   README.md               the exact command, GPU memory expectations, how to bring the adapter back
//
// Choices, checked against trl's source (SFTTrainer, DPOTrainer, GRPOTrainer and their configs):
// - SFT: trl refuses `assistant_only_loss` for vision-language models, and its VLM collator trains on
//   the whole "messages" sequence; train.py brings its own collator that renders the chat template with
//   the processor and keeps labels only on each assistant turn's tokens and its closing <|im_end|>
//   (the "\n" after it masked), exactly as src/data/template.ts does.
// - DPO: trl's DPOTrainer with the processor, loss "sigmoid", the reference = the model with the
//   adapter disabled (peft_config given, ref_model None), as in the browser.
// - GRPO: trl's GRPOTrainer; IoU / format / exact-match rewards are written in train.py with the
//   definitions of src/train/rewards.ts (cross-checked in cluster.test.ts), combined with weights.
// - PPO: trl's PPOTrainer (trl.experimental.ppo) needs a reward *model* and a value model, collates
//   text only (no pixel_values) and cannot call rule rewards, so a PPO run is exported as GRPO with
//   the PPO run's temperature, max new tokens, KL weight (beta) and clip range (epsilon); README says so.
// - Strings reach Python only as escaped ASCII literals (pyLit), numbers only when finite.

import { targetRegexFromNames } from '../model/lora.ts';
import { bitsandbytesConfig } from '../model/quant.ts';
import type { Method, TrainConfig } from '../config/config.ts';
import { formatErrors, validate } from '../config/validate.ts';
// The script is a real Python file (lintable, runnable as is with the default settings), imported as text.
import TRAIN_PY from './train.py?raw';

type RewardSetting = string | { name: string; weight: number };

export interface ClusterDataset {
  /** trl-compatible records (image paths `images/<name>`), written one per line */
  records: object[];
  images: { name: string; bytes: Uint8Array }[];
}

export interface ClusterOptions {
  /** GPUs per machine written into accelerate_config.yaml (a placeholder to edit); default 8 */
  numProcesses?: number;
  /** where train.py writes checkpoints and the adapter; default "output" */
  outputDir?: string;
}

export interface BundleFile {
  name: string;
  bytes: Uint8Array;
}

/** Everything baked into train.py, resolved from the Train settings. */
export interface ClusterSettings {
  /** the trl trainer train.py runs */
  method: 'sft' | 'dpo' | 'grpo';
  /** what the Train panel had (ppo is exported as grpo) */
  requestedMethod: Method;
  model: string;
  modelSource: 'tiny' | 'hub' | 'local';
  revision: string;
  hfEndpoint: string;
  minPixels: number;
  maxPixels: number;
  maxLength: number;
  lora: { r: number; alpha: number; dropout: number; targetModules: string; useRslora: boolean };
  optim: {
    learningRate: number;
    lrScheduler: 'constant' | 'linear' | 'cosine';
    warmupSteps: number;
    numEpochs: number;
    maxSteps: number;
    /** per device and micro-step; GRPO counts completions (batchSize × numGenerations) */
    perDeviceBatch: number;
    gradAccum: number;
    maxGradNorm: number;
    weightDecay: number;
    adamBeta1: number;
    adamBeta2: number;
    adamEpsilon: number;
    seed: number;
    saveSteps: number;
  };
  /** model.quantize nf4: the base loads in 4-bit NF4 (QLoRA) through bitsandbytes, as in the browser */
  loadIn4bit: boolean;
  /** transformers' BitsAndBytesConfig keyword arguments (model/quant.ts bitsandbytesConfig); baked always, used with --load_in_4bit */
  bnb: Record<string, unknown>;
  dpo?: { beta: number; lossType: 'sigmoid' };
  grpo?: { numGenerations: number; beta: number; temperature: number; maxCompletionLength: number; epsilon: number; lossType: 'grpo'; rewards: string[]; rewardWeights: number[] };
  outputDir: string;
  numProcesses: number;
  notes: string[];
}

export const CLUSTER_REWARDS = ['iou', 'format', 'exact'] as const;

/** Minimum versions: trl's VLM SFT/DPO/GRPO paths, transformers' ≥ 4.52 Qwen2.5-VL module layout. */
export const CLUSTER_REQUIREMENTS = [
  'torch>=2.4',
  'torchvision>=0.19  # install the build that matches your torch/CUDA',
  'transformers>=4.52',
  'trl>=0.22',
  'peft>=0.15',
  'accelerate>=1.4',
  'deepspeed>=0.16',
  'datasets>=3.2',
  'Pillow>=10.0',
];

/** With an NF4 base: bitsandbytes' 4-bit kernels (Linear4bit with NF4 and double quantisation). */
export const BNB_REQUIREMENT = 'bitsandbytes>=0.45';

// ------------------------------------------------------------------------------------------------
// Python literals

function pyStr(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (cp >= 0x20 && cp < 0x7f) out += ch;
    else if (cp <= 0xff) out += '\\x' + cp.toString(16).padStart(2, '0');
    else if (cp <= 0xffff) out += '\\u' + cp.toString(16).padStart(4, '0');
    else out += '\\U' + cp.toString(16).padStart(8, '0');
  }
  return out + '"';
}

/**
 * A Python literal for a JSON-like value, pure ASCII: strings escaped (no way out of the quotes),
 * numbers only when finite, booleans True/False, null None, arrays and plain objects recursively.
 */
export function pyLit(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new Error(`cluster: cannot write the non-finite number ${v} into train.py`);
    return JSON.stringify(v);
  }
  if (typeof v === 'string') return pyStr(v);
  if (Array.isArray(v)) return `[${v.map(pyLit).join(', ')}]`;
  if (typeof v === 'object') return `{${Object.entries(v as Record<string, unknown>).map(([k, x]) => `${pyStr(k)}: ${pyLit(x)}`).join(', ')}}`;
  throw new Error(`cluster: cannot write a ${typeof v} into train.py`);
}

/** A Python float literal (always with a point or an exponent, so argparse defaults are floats). */
function pyFloat(v: number): string {
  const s = pyLit(v);
  return /[.eE]/.test(s) ? s : s + '.0';
}

// ------------------------------------------------------------------------------------------------
// Settings

/**
 * peft target_modules as one regex (peft full-matches it against module names). Decoder projections
 * match only `…layers.N.…` of the text model, so the vision MLP's own gate/up/down_proj are left alone
 * unless vision targets (`attn.qkv`, `attn.proj`, `mlp.*_proj`, `merger.mlp.0|2`, optionally written
 * with a `visual.` prefix) were chosen. Works for both transformers layouts (`model.layers` and ≥ 4.52
 * `model.language_model.layers`), as model/lora.ts's targetRegex.
 */
export function loraTargetRegex(targetModules: string[]): string {
  return targetRegexFromNames(targetModules, 'cluster');
}

function finite(name: string, v: number, opts: { int?: boolean; min?: number; max?: number; gt?: number } = {}): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`cluster: ${name} must be a finite number, got ${String(v)}`);
  if (opts.int && !Number.isInteger(v)) throw new Error(`cluster: ${name} must be a whole number, got ${v}`);
  if (opts.min !== undefined && v < opts.min) throw new Error(`cluster: ${name} must be ≥ ${opts.min}, got ${v}`);
  if (opts.max !== undefined && v > opts.max) throw new Error(`cluster: ${name} must be ≤ ${opts.max}, got ${v}`);
  if (opts.gt !== undefined && !(v > opts.gt)) throw new Error(`cluster: ${name} must be > ${opts.gt}, got ${v}`);
  return v;
}

function rewardList(rewards: readonly RewardSetting[], where: string): { names: string[]; weights: number[] } {
  if (!rewards.length) throw new Error(`cluster: ${where}.rewards is empty: choose at least one reward`);
  const names: string[] = [], weights: number[] = [];
  for (const r of rewards) {
    const name = typeof r === 'string' ? r : r.name;
    const weight = typeof r === 'string' ? 1 : r.weight;
    if (!(CLUSTER_REWARDS as readonly string[]).includes(name)) throw new Error(`cluster: unknown reward "${name}" (train.py knows ${CLUSTER_REWARDS.join(', ')})`);
    if (names.includes(name)) throw new Error(`cluster: reward "${name}" listed twice`);
    names.push(name);
    weights.push(finite(`${where} weight of ${name}`, weight));
  }
  return { names, weights };
}

export function clusterSettings(c: TrainConfig, opts: ClusterOptions = {}): ClusterSettings {
  // the config's own rules first, all at once; the checks below guard what reaches Python
  const errors = validate(c, { modelSource: false });
  if (errors.length) throw new Error(formatErrors(errors, 'cluster: the Train settings'));
  const notes: string[] = [];
  const src = c.model.source;
  let model = c.model.hubId.trim();
  if (src === 'local') {
    model = c.model.local?.name || 'model';
    notes.push(`The model is the local folder "${model}": copy it next to train.py or pass --model /path/to/it.`);
  } else if (src === 'tiny') {
    notes.push(`The built-in tiny model exists only in the browser; the cluster run uses ${model} (change it with --model).`);
  }
  if (!model) throw new Error('cluster: no model id');
  const o = c.optim;
  const numProcesses = finite('numProcesses', opts.numProcesses ?? 8, { int: true, min: 1 });
  const method = c.method === 'ppo' ? 'grpo' : c.method;
  const perDeviceBatch = finite('optim.batchSize', o.batchSize, { int: true, min: 1 });
  const s: ClusterSettings = {
    method,
    requestedMethod: c.method,
    model,
    modelSource: src,
    revision: (c.model.revision ?? 'main').trim() || 'main',
    hfEndpoint: (c.model.endpoint ?? 'https://huggingface.co').trim() || 'https://huggingface.co',
    minPixels: finite('data.minPixels', c.data.minPixels, { int: true, min: 1 }),
    maxPixels: finite('data.maxPixels', c.data.maxPixels, { int: true, min: c.data.minPixels }),
    maxLength: finite('data.maxLength', c.data.maxLength, { int: true, min: 1 }),
    lora: {
      r: finite('lora.r', c.lora.r, { int: true, min: 1 }),
      alpha: finite('lora.alpha', c.lora.alpha, { gt: 0 }),
      dropout: finite('lora.dropout', c.lora.dropout, { min: 0, max: 1 }),
      targetModules: loraTargetRegex(c.lora.targetModules),
      useRslora: !!c.lora.useRslora,
    },
    optim: {
      learningRate: finite('optim.learningRate', o.learningRate, { gt: 0 }),
      lrScheduler: o.lrScheduler,
      warmupSteps: finite('optim.warmupSteps', o.warmupSteps, { int: true, min: 0 }),
      numEpochs: finite('optim.numEpochs', o.numEpochs, { min: 0 }),
      maxSteps: finite('optim.maxSteps', o.maxSteps, { int: true, min: 0 }),
      perDeviceBatch,
      gradAccum: finite('optim.gradAccumSteps', o.gradAccumSteps, { int: true, min: 1 }),
      maxGradNorm: finite('optim.maxGradNorm', o.maxGradNorm, { min: 0 }),
      weightDecay: finite('optim.weightDecay', o.weightDecay, { min: 0 }),
      adamBeta1: finite('optim.beta1', o.beta1 ?? 0.9, { min: 0, max: 1 }),
      adamBeta2: finite('optim.beta2', o.beta2 ?? 0.999, { min: 0, max: 1 }),
      adamEpsilon: finite('optim.eps', o.eps ?? 1e-8, { gt: 0 }),
      seed: finite('optim.seed', o.seed, { int: true, min: 0, max: 2 ** 32 - 1 }),
      saveSteps: finite('optim.saveSteps', o.saveSteps ?? 0, { int: true, min: 0 }),
    },
    loadIn4bit: c.model.quantize === 'nf4',
    bnb: bitsandbytesConfig({ quantizeVision: c.model.quantizeVision }),
    outputDir: opts.outputDir ?? 'output',
    numProcesses,
    notes,
  };
  if (s.loadIn4bit) notes.push(`4-bit NF4 base (QLoRA), as the browser run: train.py loads the model with bitsandbytes (BitsAndBytesConfig, vision tower ${c.model.quantizeVision ? 'quantised too' : 'kept BF16'}) and peft's prepare_model_for_kbit_training; pass --no-load_in_4bit for a BF16 base.`);
  if (!['constant', 'linear', 'cosine'].includes(o.lrScheduler)) throw new Error(`cluster: unknown lrScheduler ${JSON.stringify(o.lrScheduler)}`);
  if (s.optim.maxSteps === 0 && !(s.optim.numEpochs > 0)) throw new Error('cluster: set optim.numEpochs > 0 or optim.maxSteps');
  if (method === 'dpo') s.dpo = { beta: finite('dpo.beta', c.dpo.beta, { gt: 0 }), lossType: 'sigmoid' };
  if (method === 'grpo') {
    const G = finite('grpo.numGenerations', c.grpo.numGenerations, { int: true, min: 2 });
    const ppo = c.method === 'ppo' ? c.ppo : undefined;
    if (c.method === 'ppo' && !ppo) throw new Error('cluster: method ppo needs the ppo settings');
    const g = ppo
      ? { beta: ppo.klCoef, temperature: ppo.temperature, maxNewTokens: ppo.maxNewTokens, rewards: ppo.rewards, epsilon: ppo.clipRange }
      : { beta: c.grpo.beta, temperature: c.grpo.temperature, maxNewTokens: c.grpo.maxNewTokens, rewards: c.grpo.rewards, epsilon: c.grpo.epsilon };
    const where = ppo ? 'ppo' : 'grpo';
    const rw = rewardList(g.rewards, where);
    s.grpo = {
      numGenerations: G,
      beta: finite(`${where} KL weight`, g.beta, { min: 0 }),
      temperature: finite(`${where}.temperature`, g.temperature, { gt: 0 }),
      maxCompletionLength: finite(`${where}.maxNewTokens`, g.maxNewTokens, { int: true, min: 1 }),
      epsilon: finite(`${where} clip range`, g.epsilon, { gt: 0 }),
      lossType: 'grpo',
      rewards: rw.names,
      rewardWeights: rw.weights,
    };
    // trl counts completions per device: the browser's batch of prompts × G completions each.
    s.optim.perDeviceBatch = perDeviceBatch * G;
    if (ppo) {
      notes.push(
        `This run was set to PPO. trl's PPOTrainer (trl.experimental.ppo) needs a reward model and a value model and feeds text only (no pixel_values), so it cannot train Qwen2.5-VL with rule rewards; train.py runs GRPO instead with the PPO run's temperature, max new tokens, KL weight (beta ${s.grpo.beta}) and clip range (epsilon ${s.grpo.epsilon}), sampling ${G} answers per prompt (the GRPO setting). The value-head settings (vf_coef, gamma, lambda) have no GRPO counterpart.`,
      );
    }
  }
  return s;
}

// ------------------------------------------------------------------------------------------------
// train.py

interface PyArg {
  flag: string;
  /** argparse type name, or 'bool' for BooleanOptionalAction, or 'floats'/'strs' for nargs="+" */
  type: 'int' | 'float' | 'str' | 'bool' | 'floats' | 'strs';
  value: unknown;
  help: string;
  choices?: string[];
}

function argLine(a: PyArg): string {
  const def =
    a.type === 'float' ? pyFloat(a.value as number)
    : a.type === 'floats' ? `[${(a.value as number[]).map(pyFloat).join(', ')}]`
    : pyLit(a.value);
  const kind =
    a.type === 'bool' ? 'action=argparse.BooleanOptionalAction'
    : a.type === 'floats' ? 'nargs="+", type=float'
    : a.type === 'strs' ? 'nargs="+", type=str'
    : `type=${a.type}`;
  const choices = a.choices ? `, choices=${pyLit(a.choices)}` : '';
  return `    g.add_argument(${pyStr('--' + a.flag)}, ${kind}${choices}, default=${def}, help=${pyStr(a.help)})`;
}

function argGroups(s: ClusterSettings): { title: string; args: PyArg[] }[] {
  const o = s.optim;
  const groups: { title: string; args: PyArg[] }[] = [
    {
      title: 'model and data',
      args: [
        { flag: 'model', type: 'str', value: s.model, help: 'hub id or local folder of the base model' },
        { flag: 'revision', type: 'str', value: s.revision, help: 'hub revision (branch, tag or commit)' },
        { flag: 'hf_endpoint', type: 'str', value: s.hfEndpoint, help: 'Hugging Face endpoint (HF_ENDPOINT in the environment wins)' },
        { flag: 'attn_implementation', type: 'str', value: 'sdpa', help: 'sdpa, eager or flash_attention_2' },
        { flag: 'min_pixels', type: 'int', value: s.minPixels, help: 'smart_resize lower bound; the boxes in the data are in the frame these limits give: keep them' },
        { flag: 'max_pixels', type: 'int', value: s.maxPixels, help: 'smart_resize upper bound; keep it equal to the browser run' },
        { flag: 'max_length', type: 'int', value: s.maxLength, help: 'max tokens per sequence (image tokens included)' },
        { flag: 'data', type: 'str', value: 'train.jsonl', help: 'JSONL records, relative to this script; image paths in it are relative to its folder' },
        { flag: 'output_dir', type: 'str', value: s.outputDir, help: 'checkpoints; the adapter goes to <output_dir>/adapter' },
      ],
    },
    {
      title: 'LoRA (peft.LoraConfig)',
      args: [
        { flag: 'lora_r', type: 'int', value: s.lora.r, help: 'rank r' },
        { flag: 'lora_alpha', type: 'float', value: s.lora.alpha, help: 'alpha (scale alpha/r, or alpha/sqrt(r) with rsLoRA)' },
        { flag: 'lora_dropout', type: 'float', value: s.lora.dropout, help: 'dropout on the LoRA input' },
        { flag: 'target_modules', type: 'str', value: s.lora.targetModules, help: 'regex peft full-matches against module names' },
        { flag: 'use_rslora', type: 'bool', value: s.lora.useRslora, help: 'rank-stabilised scale alpha/sqrt(r)' },
      ],
    },
    {
      title: 'optimizer and schedule (AdamW)',
      args: [
        { flag: 'learning_rate', type: 'float', value: o.learningRate, help: 'peak learning rate' },
        { flag: 'lr_scheduler_type', type: 'str', value: o.lrScheduler, help: 'constant, linear or cosine (constant with warmup > 0 runs as constant_with_warmup)', choices: ['constant', 'linear', 'cosine'] },
        { flag: 'warmup_steps', type: 'int', value: o.warmupSteps, help: 'linear warmup from 0' },
        { flag: 'num_train_epochs', type: 'float', value: o.numEpochs, help: 'epochs (used when max_steps is 0)' },
        { flag: 'max_steps', type: 'int', value: o.maxSteps, help: 'optimizer steps; 0 = run num_train_epochs' },
        {
          flag: 'per_device_train_batch_size', type: 'int', value: o.perDeviceBatch,
          help: s.method === 'grpo' ? 'completions per device and micro-step (prompts x num_generations)' : 'examples per device and micro-step',
        },
        { flag: 'gradient_accumulation_steps', type: 'int', value: o.gradAccum, help: 'micro-steps per optimizer step (divided over the GPUs, see --match_global_batch)' },
        { flag: 'match_global_batch', type: 'bool', value: true, help: 'keep the browser run\'s examples per optimizer step by dividing the accumulation over the processes' },
        { flag: 'max_grad_norm', type: 'float', value: o.maxGradNorm, help: 'gradient clipping; 0 = none' },
        { flag: 'weight_decay', type: 'float', value: o.weightDecay, help: 'AdamW weight decay' },
        { flag: 'adam_beta1', type: 'float', value: o.adamBeta1, help: 'AdamW beta1' },
        { flag: 'adam_beta2', type: 'float', value: o.adamBeta2, help: 'AdamW beta2' },
        { flag: 'adam_epsilon', type: 'float', value: o.adamEpsilon, help: 'AdamW epsilon' },
        { flag: 'seed', type: 'int', value: o.seed, help: 'seed for LoRA init and data order' },
      ],
    },
  ];
  if (s.dpo) {
    groups.push({
      title: 'DPO',
      args: [
        { flag: 'dpo_beta', type: 'float', value: s.dpo.beta, help: 'beta: how far the policy may move from the reference' },
        { flag: 'dpo_loss_type', type: 'str', value: s.dpo.lossType, help: 'trl DPO loss' },
      ],
    });
  }
  if (s.grpo) {
    const g = s.grpo;
    groups.push({
      title: 'GRPO',
      args: [
        { flag: 'num_generations', type: 'int', value: g.numGenerations, help: 'answers sampled per prompt' },
        { flag: 'grpo_beta', type: 'float', value: g.beta, help: 'KL weight against the reference (adapter off); 0 = no reference pass' },
        { flag: 'temperature', type: 'float', value: g.temperature, help: 'sampling temperature' },
        { flag: 'max_completion_length', type: 'int', value: g.maxCompletionLength, help: 'max new tokens per answer' },
        { flag: 'epsilon', type: 'float', value: g.epsilon, help: 'PPO-style clip range' },
        { flag: 'grpo_loss_type', type: 'str', value: g.lossType, help: 'trl GRPO loss aggregation (Patchwork uses grpo)' },
        { flag: 'rewards', type: 'strs', value: g.rewards, help: 'reward functions: iou, format, exact' },
        { flag: 'reward_weights', type: 'floats', value: g.rewardWeights, help: 'one weight per reward' },
      ],
    });
  }
  groups.push({
    title: 'run',
    args: [
      { flag: 'gradient_checkpointing', type: 'bool', value: true, help: 'recompute activations in backward (saves memory)' },
      { flag: 'load_in_4bit', type: 'bool', value: s.loadIn4bit, help: '4-bit NF4 base (QLoRA) with bitsandbytes (the BNB settings above); needs a CUDA GPU and pip install bitsandbytes' },
      { flag: 'logging_steps', type: 'int', value: 1, help: 'log every N optimizer steps' },
      { flag: 'save_steps', type: 'int', value: s.optim.saveSteps, help: 'save a checkpoint every N steps; 0 = only the final adapter' },
      { flag: 'report_to', type: 'str', value: 'none', help: 'none, tensorboard, wandb, ...' },
      { flag: 'deepspeed', type: 'str', value: '', help: 'a DeepSpeed JSON (e.g. ds_zero2.json) when not launched by accelerate with a DeepSpeed config' },
      { flag: 'cpu', type: 'bool', value: false, help: 'run on CPU: a smoke test of the whole pipeline with a small model, before renting GPUs' },
    ],
  });
  return groups;
}

function parserCode(s: ClusterSettings): string {
  const lines: string[] = [];
  for (const grp of argGroups(s)) {
    lines.push(`    g = p.add_argument_group(${pyStr(grp.title)})`);
    for (const a of grp.args) lines.push(argLine(a));
  }
  return lines.join('\n');
}

/** The generated train.py. Only stdlib at import time, so `--help`, `--dry_run` and the reward
 * functions work without torch; trl and friends are imported in main(). */
export function trainScript(s: ClusterSettings): string {
  const header = [
    `# Generated by Patchwork ("train on a cluster"). Trains the same LoRA as the browser run with trl`,
    `# (${s.method === 'sft' ? 'SFTTrainer' : s.method === 'dpo' ? 'DPOTrainer' : 'GRPOTrainer'}), accelerate and DeepSpeed ZeRO-2:`,
    `#`,
    `#     pip install -r requirements.txt`,
    `#     python train.py --dry_run        # checks the data, prints the resolved settings (no GPU)`,
    `#     accelerate launch --config_file accelerate_config.yaml train.py`,
    `#`,
    `# Every Train-panel value is an argparse default below; override any with --name value.`,
    // comments stay printable ASCII: nothing in a note can end the comment line
    ...s.notes.flatMap((n) => wrap(n, 96).map((l) => `# ${l.replace(/[^\x20-\x7e]/g, '?')}`)),
  ].join('\n');
  return bake(TRAIN_PY, {
    header,
    settings: [
      `METHOD = ${pyLit(s.method)}`,
      `REQUESTED_METHOD = ${pyLit(s.requestedMethod)}`,
      `BAKED_PIXELS = (${s.minPixels}, ${s.maxPixels})`,
      `# transformers.BitsAndBytesConfig keyword arguments for --load_in_4bit (the browser's NF4 base)`,
      `BNB = ${pyLit(s.bnb)}`,
      '',
      '',
      'def add_settings(p):',
      parserCode(s),
      '    return g',
    ].join('\n'),
  });
}

/** train.py with the text between each `# >>> patchwork:NAME` / `# <<< patchwork:NAME` pair replaced. */
function bake(py: string, blocks: Record<string, string>): string {
  let out = py;
  for (const [name, text] of Object.entries(blocks)) {
    const open = `# >>> patchwork:${name}\n`, close = `# <<< patchwork:${name}\n`;
    const a = out.indexOf(open), b = out.indexOf(close, a);
    if (a < 0 || b < 0) throw new Error(`train.py: the patchwork:${name} markers are missing`);
    out = out.slice(0, a + open.length) + (text ? text + '\n' : '') + out.slice(b);
  }
  return out;
}

function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = '';
  for (const w of text.split(/\s+/)) {
    if (line && line.length + 1 + w.length > width) {
      out.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) out.push(line);
  return out;
}

// ------------------------------------------------------------------------------------------------
// accelerate / DeepSpeed

/** accelerate config: DeepSpeed ZeRO-2, bf16; gradient accumulation and clipping come from train.py. */
export function accelerateConfig(numProcesses = 8): string {
  return `# accelerate launch --config_file accelerate_config.yaml train.py
# DeepSpeed ZeRO-2 on one machine. Gradient accumulation and clipping are left to train.py
# (the Trainer fills DeepSpeed's "auto" values), so they are not set here.
compute_environment: LOCAL_MACHINE
debug: false
deepspeed_config:
  deepspeed_multinode_launcher: standard
  offload_optimizer_device: none
  offload_param_device: none
  zero3_init_flag: false
  zero_stage: 2
distributed_type: DEEPSPEED
downcast_bf16: 'no'
machine_rank: 0
main_training_function: main
mixed_precision: bf16
num_machines: 1
num_processes: ${finite('numProcesses', numProcesses, { int: true, min: 1 })}  # PLACEHOLDER: the number of GPUs on this machine (or pass --num_processes N)
rdzv_backend: static
same_network: true
tpu_env: []
tpu_use_cluster: false
tpu_use_sudo: false
use_cpu: false
`;
}

/** The same ZeRO-2 settings as a DeepSpeed JSON ("auto" = filled from train.py's arguments). */
export function deepspeedConfig(): Record<string, unknown> {
  return {
    bf16: { enabled: 'auto' },
    zero_optimization: {
      stage: 2,
      offload_optimizer: { device: 'none' },
      allgather_partitions: true,
      allgather_bucket_size: 2e8,
      overlap_comm: true,
      reduce_scatter: true,
      reduce_bucket_size: 'auto',
      contiguous_gradients: true,
    },
    gradient_accumulation_steps: 'auto',
    gradient_clipping: 'auto',
    train_batch_size: 'auto',
    train_micro_batch_size_per_gpu: 'auto',
    steps_per_print: 100,
    wall_clock_breakdown: false,
  };
}

// ------------------------------------------------------------------------------------------------
// README

const MODEL_PARAMS: Record<string, number> = {
  'Qwen/Qwen2.5-VL-3B-Instruct': 3.75e9,
  'Qwen/Qwen2.5-VL-7B-Instruct': 8.29e9,
  'Qwen/Qwen2.5-VL-32B-Instruct': 33.5e9,
  'Qwen/Qwen2.5-VL-72B-Instruct': 73.4e9,
};

const md = (v: unknown) => '`' + JSON.stringify(v).replace(/`/g, '\\u0060') + '`';

export function clusterReadme(s: ClusterSettings, stats: { records: number; images: number }): string {
  const o = s.optim;
  const trainerName = s.method === 'sft' ? 'SFTTrainer' : s.method === 'dpo' ? 'DPOTrainer' : 'GRPOTrainer';
  const params = MODEL_PARAMS[s.model];
  const weightsGb = params ? (params * 2) / 1e9 : undefined;
  const rows: [string, unknown][] = [
    ['method', s.requestedMethod === s.method ? s.method : `${s.requestedMethod} → ${s.method}`],
    ['model', s.model],
    ['revision', s.revision],
    ['min_pixels / max_pixels', [s.minPixels, s.maxPixels]],
    ['max_length', s.maxLength],
    ['LoRA r / alpha / dropout', [s.lora.r, s.lora.alpha, s.lora.dropout]],
    ['use_rslora', s.lora.useRslora],
    ['target_modules (regex)', s.lora.targetModules],
    ['learning_rate', o.learningRate],
    ['lr_scheduler_type / warmup_steps', [o.lrScheduler, o.warmupSteps]],
    [o.maxSteps > 0 ? 'max_steps' : 'num_train_epochs', o.maxSteps > 0 ? o.maxSteps : o.numEpochs],
    [s.method === 'grpo' ? 'completions per device / grad accumulation' : 'batch / grad accumulation', [o.perDeviceBatch, o.gradAccum]],
    ['max_grad_norm / weight_decay', [o.maxGradNorm, o.weightDecay]],
    ['AdamW betas / eps', [o.adamBeta1, o.adamBeta2, o.adamEpsilon]],
    ['seed', o.seed],
  ];
  if (s.dpo) rows.push(['DPO beta / loss', [s.dpo.beta, s.dpo.lossType]]);
  if (s.grpo) {
    const g = s.grpo;
    rows.push(['num_generations / beta / temperature', [g.numGenerations, g.beta, g.temperature]]);
    rows.push(['max_completion_length / epsilon / loss', [g.maxCompletionLength, g.epsilon, g.lossType]]);
    rows.push(['rewards / weights', [g.rewards, g.rewardWeights]]);
  }
  const perStep = s.method === 'grpo' ? `${(o.perDeviceBatch / s.grpo!.numGenerations) * o.gradAccum} prompts × ${s.grpo!.numGenerations} answers` : `${o.perDeviceBatch * o.gradAccum} examples`;
  const memRows =
    s.method === 'sft' ? ['3B: 12–18 GB (24 GB GPUs fit)', '7B: 22–30 GB (40 GB GPUs)']
    : s.method === 'dpo' ? ['3B: 16–24 GB (two sequences per pair; 40 GB GPUs are comfortable)', '7B: 28–40 GB (40–80 GB GPUs)']
    : ['3B: 20–35 GB (generation + KV cache for every answer; 40 GB GPUs)', '7B: 35–60 GB (80 GB GPUs)'];
  return `# Train this LoRA on a cluster

Exported by Patchwork. It trains **the same LoRA** as the browser run (same r, alpha, dropout, target
modules, rsLoRA, learning rate, schedule, warmup, steps/epochs, batch and accumulation, clipping, weight
decay, seed, min/max pixels) with trl's **${trainerName}**, accelerate and DeepSpeed ZeRO-2, bf16.

Dataset: ${stats.records} record${stats.records === 1 ? '' : 's'} in \`train.jsonl\`, ${stats.images} image${stats.images === 1 ? '' : 's'} in \`images/\`.

## Run

\`\`\`bash
pip install -r requirements.txt            # a CUDA build of torch/torchvision first, if pip would not pick one
python train.py --dry_run                  # no GPU: checks the data, prints the resolved trl settings
python train.py --cpu --max_steps 1        # optional smoke test of the whole pipeline on CPU (slow with a real model)
accelerate launch --config_file accelerate_config.yaml train.py
\`\`\`

\`num_processes\` in \`accelerate_config.yaml\` is a placeholder (${s.numProcesses}): set it to the number of GPUs,
or override it: \`accelerate launch --config_file accelerate_config.yaml --num_processes 4 train.py\`.
Without accelerate: \`torchrun --nproc_per_node 8 train.py --deepspeed ds_zero2.json\` (same ZeRO-2 settings).
Any setting can be overridden, e.g. \`train.py --learning_rate 1e-4 --save_steps 200\`; \`python train.py --help\` lists them.

The browser run took ${perStep} per optimizer step. With several GPUs train.py divides the gradient
accumulation over them so that stays the same (\`--no-match_global_batch\` keeps the per-GPU values
and multiplies the global batch by the number of GPUs instead; then consider a larger learning rate).
${s.hfEndpoint.replace(/\/+$/, '') !== 'https://huggingface.co' ? `\nThe model downloads from ${md(s.hfEndpoint)} (\`HF_ENDPOINT\`, set by train.py unless already in the environment).\n` : ''}
## Settings (from the Train panel)

| setting | value |
|---|---|
${rows.map(([k, v]) => `| ${k} | ${md(v).replace(/\|/g, '\\|')} |`).join('\n')}
${s.notes.length ? `\n## Notes\n\n${s.notes.map((n) => `- ${n}`).join('\n')}\n` : ''}
## How the loss is computed

${
  s.method === 'sft'
    ? `trl refuses \`assistant_only_loss\` for vision-language models and its VLM collator trains on every token
of a conversation, so train.py passes its own collator (\`AssistantOnlyCollator\`): the processor renders
the Qwen2.5-VL chat template and expands the image tokens, and labels keep only each assistant turn's tokens
and its closing \`<|im_end|>\` (the prompt, image tokens, the "\\n" after \`<|im_end|>\` and padding are -100),
exactly as Patchwork does. The loss is averaged over those tokens across the accumulated batch.`
    : s.method === 'dpo'
      ? `trl's DPOTrainer with the sigmoid loss and beta ${md(s.dpo!.beta)}. The reference is the same model with the
adapter switched off (no second copy), as in the browser. Prompts are never truncated from the left
(that would cut the image tokens).`
      : `trl's GRPOTrainer: ${s.grpo!.numGenerations} answers per prompt, advantages normalised within each group,
loss type \`grpo\`, clip range ${md(s.grpo!.epsilon)}, KL weight ${md(s.grpo!.beta)} against the model with the adapter off.
The rewards (${s.grpo!.rewards.join(', ')}) are written in train.py with Patchwork's definitions: IoU greedily matches
predicted and reference boxes (resized frame) and divides by the larger count; format is 1 for strict
\`bbox_2d\` JSON (optionally in a json fence); exact match compares normalised text. They read the
\`solution\` column (and \`reward\`, the record's reward kind); a reward that does not apply to a record
returns None, and trl sums the weighted rewards skipping those, as Patchwork does.`
}

## GPU memory

Each GPU holds the full bf16 weights${weightsGb ? ` (${weightsGb.toFixed(1)} GB for this model)` : ''} plus activations;
ZeRO-2 shards only the optimizer state and gradients, which for LoRA are small, so its gain here is
modest (use ZeRO-3 for models that do not fit one GPU). Rough peaks per GPU with gradient
checkpointing, batch as exported and ≤ ${s.maxPixels / 784 | 0} image tokens:

${memRows.map((r) => `- ${r}`).join('\n')}

Out of memory: lower \`--per_device_train_batch_size\` and raise \`--gradient_accumulation_steps\` by the
same factor (the run stays the same), or lower \`--max_pixels\` (changes the image frame: only with data
exported again with that limit).

## Bring the adapter back

When training ends, \`${s.outputDir}/adapter/\` holds \`adapter_model.safetensors\` and \`adapter_config.json\`
(peft's layout, keys \`base_model.model.model.language_model.layers.N…\`), plus \`patchwork_run.json\`.
In Patchwork: **Export → Import a peft adapter**, pick those two files; then evaluate it in Predictions
or continue training. The adapter also loads in peft: \`PeftModel.from_pretrained(model, "${s.outputDir}/adapter")\`.

## Differences from the browser run

- Data order and LoRA initialisation use PyTorch's RNG, not Patchwork's: same seed, different draws.
- bf16 tensor-core matmuls on GPU instead of f32 WebGPU kernels: losses agree to rounding, not bit for bit.
${s.method === 'dpo' ? '- trl disables dropout in DPO (`disable_dropout`), including LoRA dropout.\n' : ''}${s.method === 'grpo' ? '- Sampling uses PyTorch\'s RNG, so the sampled answers differ from the browser\'s.\n' : ''}`;
}

// ------------------------------------------------------------------------------------------------
// the bundle

const enc = new TextEncoder();
const SAFE_NAME = /^[^/\\\0]+(\/[^/\\\0]+)*$/;

function imageName(name: string): string {
  const n = name.replace(/^images\//, '');
  if (!SAFE_NAME.test(n) || n.split('/').some((p) => p === '.' || p === '..')) throw new Error(`cluster: unsafe image name ${JSON.stringify(name)}`);
  return 'images/' + n;
}

function recordImages(r: Record<string, unknown>): string[] {
  const v = r.images ?? r.image;
  return (Array.isArray(v) ? v : v === undefined || v === null ? [] : [v]).filter((x): x is string => typeof x === 'string');
}

function checkRecords(method: ClusterSettings['method'], records: object[], images: Set<string>): void {
  if (!records.length) throw new Error('cluster: the dataset has no records');
  const need = method === 'sft' ? ['messages'] : method === 'dpo' ? ['prompt', 'chosen', 'rejected'] : ['prompt'];
  records.forEach((rec, i) => {
    if (!rec || typeof rec !== 'object' || Array.isArray(rec)) throw new Error(`cluster: record ${i} is not an object`);
    const r = rec as Record<string, unknown>;
    const sftPc = method === 'sft' && 'prompt' in r && 'completion' in r;
    const missing = need.filter((k) => !(k in r));
    if (missing.length && !sftPc) throw new Error(`cluster: record ${i} lacks ${missing.join(', ')} (a ${method} record has ${need.join(', ')})`);
    for (const p of recordImages(r)) if (!images.has(p)) throw new Error(`cluster: record ${i} refers to ${JSON.stringify(p)}, which is not among the images`);
  });
}

/** One JSON object per line; U+2028/2029 escaped so no reader splits a record. */
export function toJsonlText(records: object[]): string {
  return records.map((r) => JSON.stringify(r).replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029')).join('\n') + '\n';
}

/**
 * The files of the "train on a cluster" zip: train.jsonl, images/*, train.py, accelerate_config.yaml,
 * ds_zero2.json, requirements.txt, README.md. Throws on settings or data train.py could not run with.
 */
export function clusterBundle(config: TrainConfig, dataset: ClusterDataset, opts: ClusterOptions = {}): BundleFile[] {
  const s = clusterSettings(config, opts);
  const images = new Map<string, Uint8Array>();
  for (const im of dataset.images) {
    const p = imageName(im.name);
    if (images.has(p)) throw new Error(`cluster: two images named ${JSON.stringify(p)}`);
    images.set(p, im.bytes);
  }
  checkRecords(s.method, dataset.records, new Set(images.keys()));
  const text = (name: string, t: string): BundleFile => ({ name, bytes: enc.encode(t) });
  return [
    text('README.md', clusterReadme(s, { records: dataset.records.length, images: images.size })),
    text('train.py', trainScript(s)),
    text('accelerate_config.yaml', accelerateConfig(s.numProcesses)),
    text('ds_zero2.json', JSON.stringify(deepspeedConfig(), null, 2) + '\n'),
    text('requirements.txt', [...CLUSTER_REQUIREMENTS, ...(s.loadIn4bit ? [BNB_REQUIREMENT] : [])].join('\n') + '\n'),
    text('train.jsonl', toJsonlText(dataset.records)),
    ...[...images].map(([name, bytes]) => ({ name, bytes })),
  ];
}
