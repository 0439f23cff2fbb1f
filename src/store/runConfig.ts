// Training settings edited in the Train panel, persisted in IndexedDB. Names follow peft / trl
// (r, alpha → lora_alpha, targetModules → target_modules, useRslora → use_rslora, ...) in camelCase,
// so the cluster export and the engine can map them one to one.
import { create } from 'zustand';
import { persist } from 'zustand/middleware';
import { idbStorage } from './runPersist.ts';

export type Method = 'sft' | 'dpo' | 'grpo' | 'ppo';
export type ModelSource = 'tiny' | 'hub' | 'local';
export type LrScheduler = 'constant' | 'linear' | 'cosine';
export type Reward = 'iou' | 'format' | 'exact';

export const DECODER_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;

export interface LocalFolder {
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
    batchSize: number;
    gradAccumSteps: number;
    maxGradNorm: number;
    weightDecay: number;
    seed: number;
    /** save a checkpoint every N optimizer steps (0 = only on pause, stop and the end) */
    saveSteps?: number;
  };
  data: { minPixels: number; maxPixels: number; maxLength: number };
  dpo: { beta: number };
  grpo: { numGenerations: number; beta: number; temperature: number; maxNewTokens: number; rewards: Reward[] };
  ppo: { clipRange: number; vfCoef: number; klCoef: number; gamma: number; lam: number; temperature: number; maxNewTokens: number; rewards: Reward[] };
}

export const DEFAULT_CONFIG: TrainConfig = {
  model: { source: 'tiny', hubId: 'Qwen/Qwen2.5-VL-3B-Instruct', endpoint: 'https://huggingface.co', revision: 'main', local: null },
  method: 'sft',
  lora: { r: 16, alpha: 32, dropout: 0.05, targetModules: [...DECODER_TARGETS], useRslora: false },
  optim: { learningRate: 2e-4, lrScheduler: 'cosine', warmupSteps: 10, numEpochs: 3, maxSteps: 0, batchSize: 1, gradAccumSteps: 4, maxGradNorm: 1, weightDecay: 0, seed: 42, saveSteps: 20 },
  data: { minPixels: 3136, maxPixels: 512 * 28 * 28, maxLength: 2048 },
  dpo: { beta: 0.1 },
  // beta 0 (trl's default): the reference is the adapter switched off, i.e. the base model, so after SFT a KL term would undo it
  grpo: { numGenerations: 4, beta: 0, temperature: 0.9, maxNewTokens: 128, rewards: ['iou', 'format'] },
  ppo: { clipRange: 0.2, vfCoef: 0.1, klCoef: 0.05, gamma: 1, lam: 0.95, temperature: 0.9, maxNewTokens: 128, rewards: ['iou', 'format'] },
};

export interface Preset {
  id: string;
  name: string;
  description: string;
  apply: (c: TrainConfig) => TrainConfig;
}

export const PRESETS: Preset[] = [
  {
    id: 'quick',
    name: 'Quick try',
    description: 'Built-in tiny model, 50 steps: checks the whole pipeline in about a minute.',
    apply: (c) => ({
      ...c,
      model: { ...c.model, source: 'tiny' },
      method: 'sft',
      lora: { ...c.lora, r: 8, alpha: 16, dropout: 0, useRslora: false },
      optim: { ...c.optim, learningRate: 1e-3, lrScheduler: 'cosine', warmupSteps: 5, maxSteps: 50, gradAccumSteps: 1 },
    }),
  },
  {
    id: 'grounding-3b',
    name: 'Grounding, 3B',
    description: 'Qwen2.5-VL-3B, LoRA on every decoder projection; the usual recipe for box answers.',
    apply: (c) => ({
      ...c,
      model: { ...c.model, source: 'hub', hubId: 'Qwen/Qwen2.5-VL-3B-Instruct' },
      method: 'sft',
      lora: { ...c.lora, r: 16, alpha: 32, dropout: 0.05, targetModules: [...DECODER_TARGETS], useRslora: false },
      optim: { ...c.optim, learningRate: 2e-4, lrScheduler: 'cosine', warmupSteps: 10, numEpochs: 3, maxSteps: 0, gradAccumSteps: 4, maxGradNorm: 1 },
      data: { ...c.data, maxPixels: 512 * 28 * 28 },
    }),
  },
  {
    id: 'low-memory',
    name: 'Low memory, 3B',
    description: 'Attention-only LoRA, fewer image tokens and shorter sequences for small GPUs.',
    apply: (c) => ({
      ...c,
      model: { ...c.model, source: 'hub', hubId: 'Qwen/Qwen2.5-VL-3B-Instruct' },
      lora: { ...c.lora, r: 8, alpha: 16, targetModules: ['q_proj', 'v_proj'] },
      optim: { ...c.optim, gradAccumSteps: 8, batchSize: 1 },
      data: { ...c.data, maxPixels: 256 * 28 * 28, maxLength: 1024 },
    }),
  },
  {
    id: 'dpo',
    name: 'Preferences (DPO)',
    description: 'Learns from chosen/rejected answer pairs; a small learning rate and β = 0.1.',
    apply: (c) => ({
      ...c,
      method: 'dpo',
      dpo: { beta: 0.1 },
      optim: { ...c.optim, learningRate: 2e-5, lrScheduler: 'linear', warmupSteps: 10, numEpochs: 1, maxSteps: 0 },
    }),
  },
  {
    id: 'grpo',
    name: 'Rewards (GRPO)',
    description: 'Samples 4 answers per prompt and reinforces the better ones by IoU and format rewards.',
    apply: (c) => ({
      ...c,
      method: 'grpo',
      grpo: { ...c.grpo, numGenerations: 4, beta: 0, temperature: 0.9, rewards: ['iou', 'format'] },
      optim: { ...c.optim, learningRate: 1e-5, lrScheduler: 'constant', warmupSteps: 0, maxSteps: 200 },
    }),
  },
];

/** LoRA scale applied to B·A: alpha/r, or alpha/√r with rsLoRA. */
export function loraScale(l: TrainConfig['lora']): number {
  return l.useRslora ? l.alpha / Math.sqrt(l.r) : l.alpha / l.r;
}

/** Field path → message for every invalid setting; empty when the config can be trained. */
export function validateConfig(c: TrainConfig): Record<string, string> {
  const e: Record<string, string> = {};
  const int = (v: number) => Number.isInteger(v);
  if (c.model.source === 'hub') {
    if (!/^[\w.-]+\/[\w.-]+$/.test(c.model.hubId.trim())) e['model.hubId'] = 'A hub id looks like "owner/name", e.g. Qwen/Qwen2.5-VL-3B-Instruct.';
    try {
      const u = new URL(c.model.endpoint);
      if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error();
    } catch {
      e['model.endpoint'] = 'The endpoint must be an http(s) URL, e.g. https://huggingface.co.';
    }
  }
  if (c.model.source === 'local') {
    if (!c.model.local) e['model.local'] = 'Pick a model folder.';
    else {
      const missing = missingModelFiles(c.model.local.files);
      if (missing.length) e['model.local'] = `The folder "${c.model.local.name}" lacks ${missing.join(', ')}.`;
    }
  }
  const l = c.lora;
  if (!int(l.r) || l.r < 1 || l.r > 256) e['lora.r'] = 'Rank r is a whole number from 1 to 256.';
  if (!(l.alpha > 0)) e['lora.alpha'] = 'Alpha must be greater than 0.';
  if (!(l.dropout >= 0 && l.dropout < 1)) e['lora.dropout'] = 'Dropout is a probability in [0, 1).';
  if (!l.targetModules.length) e['lora.targetModules'] = 'Choose at least one module to adapt.';
  const o = c.optim;
  if (!(o.learningRate > 0 && o.learningRate < 1)) e['optim.learningRate'] = 'The learning rate must be in (0, 1); LoRA usually uses 1e-5 to 1e-3.';
  if (!int(o.warmupSteps) || o.warmupSteps < 0) e['optim.warmupSteps'] = 'Warmup steps is a whole number ≥ 0.';
  if (!int(o.maxSteps) || o.maxSteps < 0) e['optim.maxSteps'] = 'Max steps is a whole number ≥ 0 (0 = use epochs).';
  if (o.maxSteps === 0 && !(o.numEpochs > 0)) e['optim.numEpochs'] = 'Set epochs > 0, or a number of steps.';
  if (o.maxSteps > 0 && o.warmupSteps >= o.maxSteps) e['optim.warmupSteps'] = `Warmup (${o.warmupSteps}) must be shorter than the run (${o.maxSteps} steps).`;
  if (!int(o.batchSize) || o.batchSize < 1) e['optim.batchSize'] = 'Batch size is a whole number ≥ 1.';
  if (!int(o.gradAccumSteps) || o.gradAccumSteps < 1) e['optim.gradAccumSteps'] = 'Gradient accumulation is a whole number ≥ 1.';
  if (!(o.maxGradNorm >= 0)) e['optim.maxGradNorm'] = 'Max grad norm is ≥ 0 (0 = no clipping).';
  if (!(o.weightDecay >= 0)) e['optim.weightDecay'] = 'Weight decay is ≥ 0.';
  if (!int(o.seed) || o.seed < 0 || o.seed > 2 ** 32 - 1) e['optim.seed'] = 'The seed is a whole number from 0 to 4294967295.';
  if (o.saveSteps !== undefined && (!int(o.saveSteps) || o.saveSteps < 0)) e['optim.saveSteps'] = 'Checkpoint every is a whole number of steps ≥ 0 (0 = only on pause, stop and the end).';
  const d = c.data;
  if (!int(d.minPixels) || d.minPixels < 28 * 28) e['data.minPixels'] = 'Min pixels is a whole number ≥ 784 (one 28×28 patch).';
  if (!int(d.maxPixels) || d.maxPixels < d.minPixels) e['data.maxPixels'] = 'Max pixels must be a whole number ≥ min pixels.';
  if (!int(d.maxLength) || d.maxLength < 64) e['data.maxLength'] = 'Max length is a whole number of tokens ≥ 64.';
  if (c.method === 'dpo' && !(c.dpo.beta > 0)) e['dpo.beta'] = 'β must be greater than 0.';
  if (c.method === 'grpo') {
    const g = c.grpo;
    if (!int(g.numGenerations) || g.numGenerations < 2) e['grpo.numGenerations'] = 'GRPO compares answers within a group: at least 2 generations.';
    if (!(g.beta >= 0)) e['grpo.beta'] = 'β (KL weight) is ≥ 0.';
    if (!(g.temperature > 0)) e['grpo.temperature'] = 'Temperature must be greater than 0.';
    if (!int(g.maxNewTokens) || g.maxNewTokens < 1) e['grpo.maxNewTokens'] = 'Max new tokens is a whole number ≥ 1.';
    if (!g.rewards.length) e['grpo.rewards'] = 'Choose at least one reward.';
  }
  if (c.method === 'ppo') {
    const p = c.ppo;
    if (!(p.clipRange > 0 && p.clipRange < 1)) e['ppo.clipRange'] = 'The clip range is in (0, 1); 0.2 is usual.';
    if (!(p.vfCoef >= 0)) e['ppo.vfCoef'] = 'The value-loss weight is ≥ 0.';
    if (!(p.klCoef >= 0)) e['ppo.klCoef'] = 'The KL weight is ≥ 0.';
    if (!(p.gamma > 0 && p.gamma <= 1)) e['ppo.gamma'] = 'γ is in (0, 1].';
    if (!(p.lam >= 0 && p.lam <= 1)) e['ppo.lam'] = 'λ is in [0, 1].';
    if (!(p.temperature > 0)) e['ppo.temperature'] = 'Temperature must be greater than 0.';
    if (!int(p.maxNewTokens) || p.maxNewTokens < 1) e['ppo.maxNewTokens'] = 'Max new tokens is a whole number ≥ 1.';
    if (!p.rewards.length) e['ppo.rewards'] = 'Choose at least one reward.';
  }
  return e;
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

type DeepPartial<T> = { [K in keyof T]?: T[K] extends unknown[] ? T[K] : T[K] extends object ? DeepPartial<T[K]> : T[K] };

interface ConfigStore {
  config: TrainConfig;
  /** merge a partial update, one level deep per section */
  update(patch: DeepPartial<TrainConfig>): void;
  applyPreset(id: string): void;
  reset(): void;
}

function merge<T>(base: T, patch: DeepPartial<T>): T {
  const out = { ...base } as Record<string, unknown>;
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    const b = out[k];
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && b && typeof b === 'object' && !Array.isArray(b) ? merge(b, v as DeepPartial<typeof b>) : v;
  }
  return out as T;
}

export const useTrainConfig = create<ConfigStore>()(
  persist(
    (set) => ({
      config: DEFAULT_CONFIG,
      update: (patch) => set((s) => ({ config: merge(s.config, patch) })),
      applyPreset: (id) => {
        const p = PRESETS.find((x) => x.id === id);
        if (p) set((s) => ({ config: p.apply(s.config) }));
      },
      reset: () => set({ config: DEFAULT_CONFIG }),
    }),
    {
      name: 'train-config',
      version: 1,
      storage: idbStorage<{ config: TrainConfig }>(),
      partialize: (s) => ({ config: s.config }),
      // Settings saved by an older build lack newer fields: fill them from the defaults.
      merge: (persisted, current) => ({ ...current, config: merge(DEFAULT_CONFIG, ((persisted as { config?: DeepPartial<TrainConfig> })?.config ?? {}) as DeepPartial<TrainConfig>) }),
    },
  ),
);

/** Decoder sizes of models whose config is known before download (for the LoRA size shown early). */
export const KNOWN_DECODERS: Record<string, { hidden: number; intermediate: number; layers: number; kvDim: number }> = {
  'Qwen/Qwen2.5-VL-3B-Instruct': { hidden: 2048, intermediate: 11008, layers: 36, kvDim: 2 * 128 },
  'Qwen/Qwen2.5-VL-7B-Instruct': { hidden: 3584, intermediate: 18944, layers: 28, kvDim: 4 * 128 },
};

/** Trainable LoRA parameters: Σ over layers and target modules of r·(in + out). */
export function loraParamCount(d: { hidden: number; intermediate: number; layers: number; kvDim: number }, lora: TrainConfig['lora']): number {
  const shapes: Record<string, [number, number]> = {
    q_proj: [d.hidden, d.hidden],
    k_proj: [d.hidden, d.kvDim],
    v_proj: [d.hidden, d.kvDim],
    o_proj: [d.hidden, d.hidden],
    gate_proj: [d.hidden, d.intermediate],
    up_proj: [d.hidden, d.intermediate],
    down_proj: [d.intermediate, d.hidden],
  };
  let perLayer = 0;
  for (const t of lora.targetModules) {
    const s = shapes[t];
    if (s) perLayer += lora.r * (s[0] + s[1]);
  }
  return perLayer * d.layers;
}
