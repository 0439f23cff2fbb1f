// Training settings edited in the Train panel: presets, and the zustand store persisted in IndexedDB.
import { create } from 'zustand';
import { persist } from 'zustand/middleware';
import { idbStorage } from './runPersist.ts';

// The config type, its defaults and its validation live in src/config (one definition for the studio,
// the CLI, the session and the cluster bundle); this store keeps the presets and the persistence.
import { DECODER_TARGETS, DEFAULT_CONFIG, mergeConfig, type DeepPartial, type TrainConfig } from '../config/config.ts';
export {
  DECODER_TARGETS, DEFAULT_CONFIG, loraScale, missingModelFiles,
  type LocalFolder, type LrScheduler, type Method, type ModelSource, type Reward, type TrainConfig,
} from '../config/config.ts';
export { validateConfig } from '../config/validate.ts';

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
    description: 'QLoRA: Qwen2.5-VL-3B with a 4-bit NF4 base (vision tower too), LoRA r 16 on every decoder projection, images up to 448×448.',
    apply: (c) => ({
      ...c,
      model: { ...c.model, source: 'hub', hubId: 'Qwen/Qwen2.5-VL-3B-Instruct', quantize: 'nf4', quantizeVision: true },
      lora: { ...c.lora, r: 16, alpha: 32, targetModules: [...DECODER_TARGETS] },
      optim: { ...c.optim, gradAccumSteps: 8, batchSize: 1 },
      data: { ...c.data, maxPixels: 448 * 448, maxLength: 1024 },
    }),
  },
  {
    id: 'dpo',
    name: 'Preferences (DPO)',
    description: 'Learns from chosen/rejected answer pairs; a small learning rate and β = 0.1.',
    apply: (c) => ({
      ...c,
      method: 'dpo',
      dpo: { ...c.dpo, beta: 0.1 },
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

interface ConfigStore {
  config: TrainConfig;
  /** merge a partial update, one level deep per section */
  update(patch: DeepPartial<TrainConfig>): void;
  applyPreset(id: string): void;
  reset(): void;
}

export const useTrainConfig = create<ConfigStore>()(
  persist(
    (set) => ({
      config: DEFAULT_CONFIG,
      update: (patch) => set((s) => ({ config: mergeConfig(s.config, patch) })),
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
      merge: (persisted, current) => ({ ...current, config: mergeConfig(DEFAULT_CONFIG, ((persisted as { config?: DeepPartial<TrainConfig> })?.config ?? {}) as DeepPartial<TrainConfig>) }),
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
