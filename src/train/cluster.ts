// "Train on a cluster": the files of a zip that trains THE SAME LoRA as the Train panel on GPUs with
// trl + accelerate + DeepSpeed ZeRO-2, when a user outgrows one browser. Pure functions (no React,
// no GPU); the UI zips the returned files with fflate.
//
//   data/train.jsonl        the dataset records as given (trl conversational, images as `images/<name>`)
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

export type ClusterMethod = 'sft' | 'dpo' | 'grpo' | 'ppo';
export type ClusterReward = string | { name: string; weight: number };

/** What the bundle reads: store/runConfig.ts's TrainConfig satisfies it. */
export interface ClusterConfig {
  model: { source: 'tiny' | 'hub' | 'local'; hubId: string; endpoint?: string; revision?: string; local?: { name: string } | null };
  method: ClusterMethod;
  lora: { r: number; alpha: number; dropout: number; targetModules: string[]; useRslora: boolean };
  optim: {
    learningRate: number;
    lrScheduler: 'constant' | 'linear' | 'cosine';
    warmupSteps: number;
    numEpochs: number;
    /** 0 = run numEpochs */
    maxSteps: number;
    batchSize: number;
    gradAccumSteps: number;
    maxGradNorm: number;
    weightDecay: number;
    seed: number;
    /** checkpoint every N optimizer steps (0 = only the final adapter) */
    saveSteps?: number;
    beta1?: number;
    beta2?: number;
    eps?: number;
  };
  data: { minPixels: number; maxPixels: number; maxLength: number };
  dpo: { beta: number };
  grpo: { numGenerations: number; beta: number; temperature: number; maxNewTokens: number; rewards: ClusterReward[] };
  ppo?: { clipRange: number; klCoef: number; temperature: number; maxNewTokens: number; rewards: ClusterReward[]; vfCoef?: number; gamma?: number; lam?: number };
}

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
  requestedMethod: ClusterMethod;
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

function rewardList(rewards: ClusterReward[], where: string): { names: string[]; weights: number[] } {
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

export function clusterSettings(c: ClusterConfig, opts: ClusterOptions = {}): ClusterSettings {
  if (!['sft', 'dpo', 'grpo', 'ppo'].includes(c.method)) throw new Error(`cluster: unknown method ${JSON.stringify(c.method)} (sft, dpo, grpo or ppo)`);
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
    outputDir: opts.outputDir ?? 'output',
    numProcesses,
    notes,
  };
  if (!['constant', 'linear', 'cosine'].includes(o.lrScheduler)) throw new Error(`cluster: unknown lrScheduler ${JSON.stringify(o.lrScheduler)}`);
  if (s.optim.maxSteps === 0 && !(s.optim.numEpochs > 0)) throw new Error('cluster: set optim.numEpochs > 0 or optim.maxSteps');
  if (method === 'dpo') s.dpo = { beta: finite('dpo.beta', c.dpo.beta, { gt: 0 }), lossType: 'sigmoid' };
  if (method === 'grpo') {
    const G = finite('grpo.numGenerations', c.grpo.numGenerations, { int: true, min: 2 });
    const ppo = c.method === 'ppo' ? c.ppo : undefined;
    if (c.method === 'ppo' && !ppo) throw new Error('cluster: method ppo needs the ppo settings');
    const g = ppo
      ? { beta: ppo.klCoef, temperature: ppo.temperature, maxNewTokens: ppo.maxNewTokens, rewards: ppo.rewards, epsilon: ppo.clipRange }
      : { beta: c.grpo.beta, temperature: c.grpo.temperature, maxNewTokens: c.grpo.maxNewTokens, rewards: c.grpo.rewards, epsilon: 0.2 };
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
        { flag: 'data', type: 'str', value: 'data/train.jsonl', help: 'JSONL records, relative to this script' },
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
  return String.raw`#!/usr/bin/env python3
${header}
import argparse
import json
import math
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
METHOD = ${pyLit(s.method)}
REQUESTED_METHOD = ${pyLit(s.requestedMethod)}
BAKED_PIXELS = (${s.minPixels}, ${s.maxPixels})
IGNORE_INDEX = -100


def build_parser():
    p = argparse.ArgumentParser(description="Patchwork LoRA on Qwen2.5-VL with trl (" + METHOD + ").")
${parserCode(s)}
    g.add_argument("--dry_run", action="store_true", help="check the data and print the resolved settings, then exit")
    return p


# ---------------------------------------------------------------- rewards
# The definitions of Patchwork's src/train/rewards.ts and src/data/bbox.ts, line for line, so a reward
# here equals the browser's for the same text. JavaScript's notion of whitespace (String.trim, \s) is
# spelled out, since Python's differs in a few control characters.

_WS_CHARS = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_WS = "[" + re.escape(_WS_CHARS) + "]"
_TRIM = re.compile(r"\A" + _WS + r"+|" + _WS + r"+\Z")
_FENCE = re.compile(r"\x60\x60\x60(?:json)?" + _WS + r"*\n?([\s\S]*?)\n?\x60\x60\x60")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_RADIX = re.compile(r"0([xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)")
_QUOTED = re.compile(r"'([^'\\]*)'")
_TRAILING_COMMA = re.compile(r"," + _WS + r"*([}\]])")
_SPACES = re.compile(_WS + r"+")
_TAIL_PUNCT = re.compile(r"(?:" + _WS + r"|[.,!?;:\u3002\uff0c\uff01\uff1f\uff1b\uff1a])+\Z")


def js_trim(s):
    return _TRIM.sub("", s)


def _json_strict(s):
    # JSON.parse: no NaN / Infinity literals
    def bad(name):
        raise ValueError("not JSON: " + name)
    return json.loads(s, parse_constant=bad)


def _finite_number(x):
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    try:
        x = float(x)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def _js_number(s):
    # Number(string) for the forms a model writes: decimals, exponents, 0x / 0o / 0b
    t = js_trim(s)
    if _DECIMAL.fullmatch(t):
        return float(t)
    m = _RADIX.fullmatch(t)
    if m:
        try:
            return float(int(m.group(1)[1:], {"x": 16, "o": 8, "b": 2}[m.group(1)[0].lower()]))
        except OverflowError:
            return float("inf")
    return float("nan")


def _match_brace(text, start):
    depth = 0
    quote = ""
    i = start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch == '"' or ch == "'":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


def _parse_loose(s):
    try:
        return _json_strict(s)
    except Exception:
        # Python-style dicts and trailing commas, as models sometimes write them
        fixed = _TRAILING_COMMA.sub(r"\1", _QUOTED.sub(lambda m: json.dumps(m.group(1)), s))
        try:
            return _json_strict(fixed)
        except Exception:
            return None


def _to_grounding(o):
    if not isinstance(o, dict):
        return None
    b = o.get("bbox_2d")
    if b is None:
        b = o.get("bbox")
    if not isinstance(b, list) or len(b) != 4:
        return None
    nums = []
    for v in b:
        if isinstance(v, str) and js_trim(v) != "":
            v = _js_number(v)
        x = _finite_number(v)
        if x is None:
            return None
        nums.append(x)
    g = {"bbox": nums}
    if isinstance(o.get("label"), str):
        g["label"] = o["label"]
    return g


def parse_groundings(text):
    """Every {"bbox_2d": [x1, y1, x2, y2], "label": ...} object in an answer, in order (bbox.ts parseGroundings)."""
    out = []
    i = text.find("{")
    while i >= 0:
        end = _match_brace(text, i)
        g = _to_grounding(_parse_loose(text[i:end])) if end > 0 else None
        if g is not None:
            out.append(g)
        i = text.find("{", end if g is not None else i + 1)
    return out


def box_iou(a, b):
    def area(x1, y1, x2, y2):
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)
    inter = area(max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    union = area(*a) + area(*b) - inter
    return inter / union if union > 0 else 0.0


def iou_score(completion, boxes):
    """Mean IoU against the reference boxes (greedy one-to-one matching over max(#ref, #pred)); None without boxes."""
    if not boxes:
        return None
    pred = [g["bbox"] for g in parse_groundings(completion)]
    if not pred:
        return 0.0
    if len(boxes) == 1:
        return box_iou(pred[0], boxes[0])
    pairs = [(box_iou(p, g), i, j) for i, g in enumerate(boxes) for j, p in enumerate(pred)]
    pairs = sorted(pairs, key=lambda t: -t[0])
    used_g, used_p, total = set(), set(), 0.0
    for v, i, j in pairs:
        if i in used_g or j in used_p:
            continue
        used_g.add(i)
        used_p.add(j)
        total += v
    return total / max(len(boxes), len(pred))


def _is_box_object(v):
    if not isinstance(v, dict):
        return False
    b = v.get("bbox_2d")
    return isinstance(b, list) and len(b) == 4 and all(_finite_number(x) is not None for x in b)


def format_score(completion):
    """1 when the whole answer (optionally in one json fence) is strict JSON: a bbox_2d object or a non-empty list of them."""
    s = js_trim(completion)
    m = _FENCE.fullmatch(s)
    if m:
        s = js_trim(m.group(1))
    try:
        v = _json_strict(s)
    except Exception:
        return 0.0
    if isinstance(v, list):
        return 1.0 if len(v) > 0 and all(_is_box_object(x) for x in v) else 0.0
    return 1.0 if _is_box_object(v) else 0.0


def normalize_answer(s):
    return _TAIL_PUNCT.sub("", _SPACES.sub(" ", js_trim(s).lower()))


def exact_score(completion, answer):
    if answer is None:
        return None
    return 1.0 if normalize_answer(completion) == normalize_answer(answer) else 0.0


def reference_of(solution, kind):
    """A record's reference: IoU reads boxes from "solution" (bbox_2d JSON, resized frame), exact match its text.
    "reward" names the record's reward kind; without it, boxes when the solution holds any, else the text."""
    sol = solution if isinstance(solution, str) else None
    boxes = [g["bbox"] for g in parse_groundings(sol)] if sol else []
    if kind == "iou":
        return {"boxes": boxes or None, "answer": None}
    if kind == "exact":
        return {"boxes": None, "answer": sol}
    return {"boxes": boxes or None, "answer": None if boxes else sol}


def completion_text(c):
    if isinstance(c, str):
        return c
    if isinstance(c, list) and c:  # conversational: [{"role": "assistant", "content": ...}]
        c = c[-1].get("content", "") if isinstance(c[-1], dict) else c[-1]
    if isinstance(c, list):
        return "".join(p.get("text") or "" for p in c if isinstance(p, dict) and p.get("type") == "text")
    return c if isinstance(c, str) else ""


SCORES = {
    "iou": lambda text, ref: iou_score(text, ref["boxes"]),
    "format": lambda text, ref: format_score(text),
    "exact": lambda text, ref: exact_score(text, ref["answer"]),
}


def make_reward_func(name):
    """A trl reward function: gets the completions plus the dataset columns; None = does not apply (trl nansums)."""
    score = SCORES[name]

    def reward_func(completions, solution=None, reward=None, **kwargs):
        n = len(completions)
        sols = solution if solution is not None else [None] * n
        kinds = reward if reward is not None else [None] * n
        out = []
        for c, sol, kind in zip(completions, sols, kinds):
            v = score(completion_text(c), reference_of(sol, kind))
            out.append(None if v is None else float(v))
        return out

    reward_func.__name__ = name  # trl logs rewards/<name>/mean, as Patchwork does
    return reward_func


# ---------------------------------------------------------------- settings (no third-party imports)

def smart_resize(height, width, factor=28, min_pixels=56 * 56, max_pixels=28 * 28 * 1280):
    # Qwen2.5-VL's smart_resize (round half to even, as Python's round and Patchwork's image.ts)
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def batch_plan(per_device, accum, world, match):
    """(per_device, accum, note): keep the browser's examples per optimizer step (per_device x accum) on world processes."""
    total = per_device * accum
    if world <= 1 or not match:
        note = None if world <= 1 else "global batch is %d (browser: %d), --no-match_global_batch" % (total * world, total)
        return per_device, accum, note
    if accum % world == 0:
        return per_device, accum // world, None
    if total % world == 0:
        return total // world, 1, None
    acc = max(1, -(-accum // world))
    return per_device, acc, "%d examples per step do not split over %d processes: global batch is %d" % (total, world, per_device * acc * world)


def resolve(args, world):
    """The keyword arguments of peft.LoraConfig and of the trl config, from the command line."""
    if (args.min_pixels, args.max_pixels) != BAKED_PIXELS:
        print("WARNING: min/max pixels differ from the browser run %s: the boxes in the data are in the frame the browser's limits give, so answers will be offset." % (BAKED_PIXELS,), file=sys.stderr)
    per_device, accum, note = batch_plan(args.per_device_train_batch_size, args.gradient_accumulation_steps, world, args.match_global_batch)
    sched = args.lr_scheduler_type
    if sched == "constant" and args.warmup_steps > 0:
        sched = "constant_with_warmup"
    alpha = int(args.lora_alpha) if float(args.lora_alpha).is_integer() else args.lora_alpha
    lora = dict(r=args.lora_r, lora_alpha=alpha, lora_dropout=args.lora_dropout, target_modules=args.target_modules,
                use_rslora=args.use_rslora, bias="none", task_type="CAUSAL_LM")
    common = dict(
        output_dir=args.output_dir,
        learning_rate=args.learning_rate,
        lr_scheduler_type=sched,
        warmup_steps=args.warmup_steps,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps if args.max_steps > 0 else -1,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        max_grad_norm=args.max_grad_norm,
        weight_decay=args.weight_decay,
        optim="adamw_torch",
        adam_beta1=args.adam_beta1,
        adam_beta2=args.adam_beta2,
        adam_epsilon=args.adam_epsilon,
        seed=args.seed,
        data_seed=args.seed,
        bf16=True,
        gradient_checkpointing=args.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=args.logging_steps,
        save_strategy="steps" if args.save_steps > 0 else "no",
        save_steps=args.save_steps if args.save_steps > 0 else 500,
        report_to=args.report_to,
        remove_unused_columns=False,
    )
    if args.cpu:
        common["use_cpu"] = True
    if args.deepspeed:
        common["deepspeed"] = args.deepspeed if os.path.isabs(args.deepspeed) else os.path.join(HERE, args.deepspeed)
    if METHOD == "sft":
        # our collator masks all but the assistant turns; trl's own VLM path would train on the prompt too
        extra = dict(max_length=None, packing=False, dataset_kwargs={"skip_prepare_dataset": True})
    elif METHOD == "dpo":
        # keep_start and no prompt limit: truncating from the left would cut the image tokens
        extra = dict(beta=args.dpo_beta, loss_type=args.dpo_loss_type, label_smoothing=0.0, max_length=args.max_length,
                     max_prompt_length=None, max_completion_length=None, truncation_mode="keep_start")
    else:
        if len(args.reward_weights) != len(args.rewards):
            raise SystemExit("--reward_weights needs one weight per reward (%d rewards, %d weights)" % (len(args.rewards), len(args.reward_weights)))
        unknown = [r for r in args.rewards if r not in SCORES]
        if unknown:
            raise SystemExit("unknown rewards %s (known: %s)" % (unknown, ", ".join(SCORES)))
        if (per_device * accum * world) % args.num_generations:
            raise SystemExit("completions per step (%d) must be a multiple of num_generations (%d)" % (per_device * accum * world, args.num_generations))
        extra = dict(num_generations=args.num_generations, beta=args.grpo_beta, temperature=args.temperature, top_p=1.0, top_k=0,
                     repetition_penalty=1.0, max_completion_length=args.max_completion_length, max_prompt_length=None,
                     epsilon=args.epsilon, loss_type=args.grpo_loss_type, scale_rewards=True, num_iterations=1,
                     reward_weights=list(args.reward_weights), log_completions=False)
    return {"method": METHOD, "requested_method": REQUESTED_METHOD, "world_size": world, "batch_note": note,
            "lora": lora, "trainer": dict(common, **extra)}


def load_records(args):
    """The JSONL records with image paths made absolute; checks the keys the method needs and that images exist."""
    path = args.data if os.path.isabs(args.data) else os.path.join(HERE, args.data)
    need = {"sft": ("messages",), "dpo": ("prompt", "chosen", "rejected"), "grpo": ("prompt",)}[METHOD]
    records, problems = [], []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError as e:
            problems.append("line %d: not JSON (%s)" % (n, e))
            continue
        if not isinstance(r, dict):
            problems.append("line %d: not an object" % n)
            continue
        if METHOD == "sft" and "messages" not in r and "prompt" in r and "completion" in r:
            r["messages"] = r.pop("prompt") + r.pop("completion")
        missing = [k for k in need if k not in r]
        if missing:
            problems.append("line %d: %s needs %s" % (n, METHOD, ", ".join(missing)))
            continue
        imgs = r.get("images")
        if imgs is None and isinstance(r.get("image"), str):
            imgs = [r.pop("image")]
        imgs = imgs or []
        if isinstance(imgs, str):
            imgs = [imgs]
        absolute = []
        for im in imgs:
            p = im if os.path.isabs(im) else os.path.join(HERE, im)
            if not os.path.isfile(p):
                problems.append("line %d: image %s not found" % (n, im))
            absolute.append(p)
        r["images"] = absolute
        records.append(r)
    if problems:
        raise SystemExit("%s: %d problem(s):\n  %s" % (path, len(problems), "\n  ".join(problems[:20])))
    if not records:
        raise SystemExit(path + ": no records")
    return records


# ---------------------------------------------------------------- training

def _version(v):
    return tuple(int(x) for x in re.findall(r"\d+", v)[:2])


# limits older trl versions have (and would apply to prompts holding image tokens); newer ones dropped them
_OPTIONAL_FIELDS = {"max_prompt_length", "max_completion_length"}


def _config(cls, kwargs):
    """cls(**kwargs) without the fields this trl version does not have (printed, unless only _OPTIONAL_FIELDS)."""
    import dataclasses
    names = {f.name for f in dataclasses.fields(cls)}
    dropped = sorted(k for k in kwargs if k not in names and k not in _OPTIONAL_FIELDS)
    if dropped:
        print("note: %s has no %s; left at its default" % (cls.__name__, ", ".join(dropped)), file=sys.stderr)
    return cls(**{k: v for k, v in kwargs.items() if k in names})


def _set_pixel_limits(processor, lo, hi):
    ip = processor.image_processor
    if hasattr(ip, "min_pixels"):
        ip.min_pixels = lo
    if hasattr(ip, "max_pixels"):
        ip.max_pixels = hi
    size = getattr(ip, "size", None)
    if isinstance(size, dict):
        if "shortest_edge" in size or "longest_edge" in size:
            ip.size = dict(size, shortest_edge=lo, longest_edge=hi)
        elif "min_pixels" in size or "max_pixels" in size:
            ip.size = dict(size, min_pixels=lo, max_pixels=hi)
    from PIL import Image
    for w, h in ((1000, 700), (60, 90), (4032, 3024)):  # the processor must resize as the browser did
        thw = processor.image_processor(images=[Image.new("RGB", (w, h))], return_tensors="pt")["image_grid_thw"][0].tolist()
        rh, rw = smart_resize(h, w, 28, lo, hi)
        if thw[1:] != [rh // 14, rw // 14]:
            raise SystemExit("the image processor resizes %dx%d to %dx%d patches, Patchwork to %dx%d: boxes would be offset" % (w, h, thw[2], thw[1], rw // 14, rh // 14))


def _orient_images(records, out_dir):
    """Apply EXIF orientation (the browser does when it decodes) by writing upright copies."""
    from PIL import Image, ImageOps
    fixed = {}
    for r in records:
        new = []
        for p in r["images"]:
            if p not in fixed:
                fixed[p] = p
                with Image.open(p) as im:
                    if im.getexif().get(0x0112, 1) != 1:
                        os.makedirs(out_dir, exist_ok=True)
                        q = os.path.join(out_dir, "%d_%s.png" % (len(fixed), os.path.splitext(os.path.basename(p))[0]))
                        if not os.path.exists(q):  # the main process writes, the others reuse
                            ImageOps.exif_transpose(im).save(q)
                        fixed[p] = q
            new.append(fixed[p])
        r["images"] = new


class AssistantOnlyCollator:
    """SFT batches: the chat template rendered by the processor, labels only on the assistant turns.

    trl's VLM collator trains on every token of "messages" and trl refuses assistant_only_loss for VLMs,
    so this keeps, as Patchwork's template.ts, each assistant turn's tokens and its closing <|im_end|>
    (the newline after it, the prompt, the image tokens and the padding get -100)."""

    def __init__(self, processor, max_length):
        self.processor = processor
        self.max_length = max_length
        tok = processor.tokenizer
        self.im_start = tok.convert_tokens_to_ids("<|im_start|>")
        self.im_end = tok.convert_tokens_to_ids("<|im_end|>")
        self.assistant = tok.encode("assistant", add_special_tokens=False)
        self.newline = tok.encode("\n", add_special_tokens=False)

    @staticmethod
    def _clean(messages):
        out = []
        for m in messages:
            c = m["content"]
            if isinstance(c, list):  # Arrow fills absent keys with None
                c = [{k: v for k, v in part.items() if v is not None} for part in c]
            out.append({"role": m["role"], "content": c})
        return out

    def _labels(self, ids):
        labels = [IGNORE_INDEX] * len(ids)
        a, nl = self.assistant, self.newline
        i = 0
        while i < len(ids):
            if ids[i] == self.im_start and ids[i + 1:i + 1 + len(a)] == a:
                start = i + 1 + len(a)
                if ids[start:start + len(nl)] == nl:
                    start += len(nl)  # a token that merges "\n" with the answer counts as answer
                j = start
                while j < len(ids) and ids[j] != self.im_end:
                    j += 1
                stop = min(j + 1, len(ids))
                labels[start:stop] = ids[start:stop]
                i = stop
            else:
                i += 1
        return labels

    def __call__(self, examples):
        import torch
        from PIL import Image
        texts, images = [], []
        for ex in examples:
            texts.append(self.processor.apply_chat_template(self._clean(ex["messages"]), tokenize=False, add_generation_prompt=False))
            images.append([Image.open(p).convert("RGB") for p in ex["images"]])
        kw = {"images": images} if any(images) else {}
        batch = self.processor(text=texts, padding=True, return_tensors="pt", **kw)
        ids = batch["input_ids"]
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        if max(lengths) > self.max_length:
            raise ValueError("a sample has %d tokens (image tokens included), above --max_length %d: raise it or lower --max_pixels" % (max(lengths), self.max_length))
        labels = torch.tensor([self._labels(row) for row in ids.tolist()], dtype=ids.dtype)
        labels[batch["attention_mask"] == 0] = IGNORE_INDEX
        batch["labels"] = labels
        return batch


def main(argv=None):
    args = build_parser().parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    plan = resolve(args, world)
    records = load_records(args)
    if args.dry_run:
        print(json.dumps(dict(plan, records=len(records), images=len({p for r in records for p in r["images"]})), indent=2))
        return 0
    if args.hf_endpoint and args.hf_endpoint.rstrip("/") != "https://huggingface.co":
        os.environ.setdefault("HF_ENDPOINT", args.hf_endpoint)  # before huggingface_hub is imported

    import torch
    import transformers
    from accelerate import PartialState
    from datasets import Dataset, Image as HFImage
    from peft import LoraConfig
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
    try:
        from datasets import List as HFList  # datasets >= 4
    except ImportError:
        from datasets import Sequence as HFList

    transformers.set_seed(args.seed)  # LoRA init
    state = PartialState()
    if plan["batch_note"] and state.is_main_process:
        print("note: " + plan["batch_note"], file=sys.stderr)
    with state.main_process_first():
        _orient_images(records, os.path.join(args.output_dir, "oriented_images"))

    model_path = args.model
    if not os.path.isabs(model_path) and os.path.isdir(os.path.join(HERE, model_path)):
        model_path = os.path.join(HERE, model_path)
    dtype_key = "dtype" if _version(transformers.__version__) >= (4, 56) else "torch_dtype"
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        model_path, revision=args.revision, attn_implementation=args.attn_implementation, **{dtype_key: torch.bfloat16})
    processor = AutoProcessor.from_pretrained(model_path, revision=args.revision, min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    _set_pixel_limits(processor, args.min_pixels, args.max_pixels)
    if args.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed blocks need a grad path from the (frozen) inputs
        if METHOD != "grpo":
            model.config.use_cache = False

    lora = LoraConfig(**plan["lora"])
    keys = sorted({k for r in records for k in r})
    rows = [{k: r.get(k) for k in keys} for r in records]

    if METHOD == "sft":
        from trl import SFTConfig, SFTTrainer
        processor.tokenizer.padding_side = "right"
        trainer = SFTTrainer(model=model, args=_config(SFTConfig, plan["trainer"]), train_dataset=Dataset.from_list(rows),
                             data_collator=AssistantOnlyCollator(processor, args.max_length), processing_class=processor, peft_config=lora)
    elif METHOD == "dpo":
        from trl import DPOConfig, DPOTrainer
        ds = Dataset.from_list(rows).cast_column("images", HFList(HFImage()))
        trainer = DPOTrainer(model=model, ref_model=None, args=_config(DPOConfig, plan["trainer"]), train_dataset=ds,
                             processing_class=processor, peft_config=lora)
    else:
        from trl import GRPOConfig, GRPOTrainer
        ds = Dataset.from_list(rows)
        if all(len(r["images"]) == 1 for r in records):  # one image: the "image" column every VLM-capable trl reads
            ds = ds.map(lambda ex: {"image": ex["images"][0]}, remove_columns=["images"]).cast_column("image", HFImage())
        else:
            ds = ds.cast_column("images", HFList(HFImage()))
        trainer = GRPOTrainer(model=model, reward_funcs=[make_reward_func(n) for n in args.rewards], args=_config(GRPOConfig, plan["trainer"]),
                              train_dataset=ds, processing_class=processor, peft_config=lora)

    trainer.train()

    adapter_dir = os.path.join(args.output_dir, "adapter")
    if trainer.accelerator.is_main_process:
        # peft layout (adapter_model.safetensors + adapter_config.json): Patchwork's Export > Import adapter reads it
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(adapter_dir, safe_serialization=True)
        with open(os.path.join(adapter_dir, "patchwork_run.json"), "w", encoding="utf-8") as f:
            json.dump(dict(plan, model=args.model, revision=args.revision, min_pixels=args.min_pixels, max_pixels=args.max_pixels), f, indent=2, default=str)
        print("adapter saved to " + adapter_dir)
    trainer.accelerator.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
`;
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

Dataset: ${stats.records} record${stats.records === 1 ? '' : 's'} in \`data/train.jsonl\`, ${stats.images} image${stats.images === 1 ? '' : 's'} in \`images/\`.

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
 * The files of the "train on a cluster" zip: data/train.jsonl, images/*, train.py, accelerate_config.yaml,
 * ds_zero2.json, requirements.txt, README.md. Throws on settings or data train.py could not run with.
 */
export function clusterBundle(config: ClusterConfig, dataset: ClusterDataset, opts: ClusterOptions = {}): BundleFile[] {
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
    text('requirements.txt', CLUSTER_REQUIREMENTS.join('\n') + '\n'),
    text('data/train.jsonl', toJsonlText(dataset.records)),
    ...[...images].map(([name, bytes]) => ({ name, bytes })),
  ];
}
