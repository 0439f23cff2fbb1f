import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../store/runConfig.ts';
import { adapterConfig, targetRegex } from './recipe.ts';

// peft full-matches a string target_modules against each module name
const fullMatch = (re: string, name: string) => new RegExp(`^(?:${re})$`).test(name);

describe('adapter_config.json', () => {
  const c = { ...DEFAULT_CONFIG, model: { ...DEFAULT_CONFIG.model, source: 'hub' as const, hubId: 'Qwen/Qwen2.5-VL-3B-Instruct' }, lora: { ...DEFAULT_CONFIG.lora, r: 8, alpha: 16, targetModules: ['q_proj', 'down_proj'], useRslora: true } };

  it('carries the LoRA settings under peft names', () => {
    const a = adapterConfig(c);
    expect(a).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 8, lora_alpha: 16, use_rslora: true, lora_dropout: 0.05, base_model_name_or_path: 'Qwen/Qwen2.5-VL-3B-Instruct', bias: 'none' });
  });

  it('targets decoder projections only, never the vision tower (transformers ≥ 4.52 names)', () => {
    const re = targetRegex(c, 'transformers');
    expect(fullMatch(re, 'model.language_model.layers.0.self_attn.q_proj')).toBe(true);
    expect(fullMatch(re, 'model.language_model.layers.35.mlp.down_proj')).toBe(true);
    expect(fullMatch(re, 'model.language_model.layers.3.self_attn.k_proj')).toBe(false); // not chosen
    expect(fullMatch(re, 'model.visual.blocks.0.mlp.down_proj')).toBe(false);
    expect(fullMatch(re, 'model.visual.merger.mlp.0')).toBe(false);
  });

  it('legacy layout (model.layers.N, visual.blocks.N)', () => {
    const re = targetRegex(c, 'legacy');
    expect(fullMatch(re, 'model.layers.7.self_attn.q_proj')).toBe(true);
    expect(fullMatch(re, 'visual.blocks.7.mlp.down_proj')).toBe(false);
  });
});
