// Files that describe a run outside the browser: the peft adapter_config.json that goes with an
// exported adapter, and the "train on a cluster" recipe (accelerate + DeepSpeed ZeRO-2 + trl) that
// trains the same LoRA on GPUs from the exported dataset. Pure functions of the Train settings.
import type { TrainConfig } from '../store/runConfig.ts';
import { fullPrecisionBaseId } from '../model/quant.ts';

export type AdapterLayout = 'transformers' | 'legacy';

export function baseModelId(c: TrainConfig): string {
  // a pre-quantised bitsandbytes repo ("…-bnb-4bit") names its full-precision original, as session/model.ts baseModelId does
  if (c.model.source === 'hub') return fullPrecisionBaseId(c.model.hubId.trim());
  if (c.model.source === 'local') return c.model.local?.name ?? 'local-model';
  return 'patchwork-builtin-tiny';
}

/**
 * peft's target_modules as a regex (peft full-matches a string against module names), so that the
 * decoder projections are adapted and the vision tower's gate/up/down_proj of the same names are not.
 * transformers ≥ 4.52 names decoder layers `model.language_model.layers.N`, older ones `model.layers.N`.
 */
export function targetRegex(c: TrainConfig, layout: AdapterLayout): string {
  const prefix = layout === 'transformers' ? 'model\\.language_model\\.layers' : 'model\\.layers';
  return `.*${prefix}\\.\\d+\\.(self_attn|mlp)\\.(${c.lora.targetModules.join('|')})`;
}

/** adapter_config.json as peft writes it for a LoRA on a causal LM. */
export function adapterConfig(c: TrainConfig, layout: AdapterLayout = 'transformers'): Record<string, unknown> {
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModelId(c),
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: c.lora.alpha,
    lora_dropout: c.lora.dropout,
    modules_to_save: null,
    peft_type: 'LORA',
    r: c.lora.r,
    rank_pattern: {},
    revision: c.model.source === 'hub' && c.model.revision !== 'main' ? c.model.revision : null,
    target_modules: targetRegex(c, layout),
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: c.lora.useRslora,
  };
}
