import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, KNOWN_DECODERS, PRESETS, loraParamCount, loraScale, missingModelFiles, validateConfig, type TrainConfig } from './runConfig.ts';

const withPatch = (f: (c: TrainConfig) => void): TrainConfig => {
  const c = structuredClone(DEFAULT_CONFIG);
  f(c);
  return c;
};

describe('train settings', () => {
  it('the defaults and every preset are valid', () => {
    expect(validateConfig(DEFAULT_CONFIG)).toEqual({});
    for (const p of PRESETS) expect(validateConfig(p.apply(DEFAULT_CONFIG)), p.id).toEqual({});
  });

  it('"Low memory, 3B" is QLoRA: Qwen2.5-VL-3B with an NF4 base (vision too), r 16 / alpha 32 on the 7 text projections, 448×448 images', () => {
    const p = PRESETS.find((x) => x.id === 'low-memory')!;
    expect(p.name).toBe('Low memory, 3B');
    const c = p.apply(withPatch((c) => { c.model.quantizeVision = false; c.lora.targetModules = ['q_proj']; c.lora.r = 4; }));
    expect(c.model).toMatchObject({ source: 'hub', hubId: 'Qwen/Qwen2.5-VL-3B-Instruct', quantize: 'nf4', quantizeVision: true });
    expect(c.lora).toMatchObject({ r: 16, alpha: 32 });
    expect([...c.lora.targetModules].sort()).toEqual(['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
    expect(c.data.maxPixels).toBe(448 * 448);
    expect(validateConfig(c)).toEqual({});
  });

  it('names each bad field with a readable message', () => {
    const e = validateConfig(
      withPatch((c) => {
        c.lora.r = 0;
        c.lora.targetModules = [];
        c.optim.learningRate = 0;
        c.optim.maxSteps = 5;
        c.optim.warmupSteps = 10;
        c.optim.gradAccumSteps = 1.5;
        c.data.maxPixels = 100;
        c.model.source = 'hub';
        c.model.hubId = 'not a hub id';
        c.model.endpoint = 'ftp://x';
      }),
    );
    expect(Object.keys(e).sort()).toEqual(
      ['data.maxPixels', 'lora.r', 'lora.targetModules', 'model.endpoint', 'model.hubId', 'optim.gradAccumSteps', 'optim.learningRate', 'optim.warmupSteps'].sort(),
    );
    expect(e['optim.warmupSteps']).toMatch(/10.*5 steps/);
  });

  it('checks method-specific settings only for that method', () => {
    const c = withPatch((c) => {
      c.grpo.numGenerations = 1;
      c.dpo.beta = 0;
    });
    expect(validateConfig(c)).toEqual({});
    expect(Object.keys(validateConfig({ ...c, method: 'grpo' }))).toEqual(['grpo.numGenerations']);
    expect(Object.keys(validateConfig({ ...c, method: 'dpo' }))).toEqual(['dpo.beta']);
  });

  it('a local folder must hold config, tokenizer and safetensors', () => {
    expect(missingModelFiles(['config.json', 'tokenizer.json', 'model-00001-of-00002.safetensors'])).toEqual([]);
    expect(missingModelFiles(['config.json'])).toEqual(['tokenizer.json', '*.safetensors weights']);
    const c = withPatch((c) => {
      c.model.source = 'local';
      c.model.local = { name: 'qwen', files: ['config.json'] };
    });
    expect(validateConfig(c)['model.local']).toMatch(/"qwen" lacks tokenizer\.json/);
  });

  it('LoRA scale and parameter count (Qwen2.5-VL-3B, r=16, all decoder projections ≈ 29.9 M as peft reports)', () => {
    expect(loraScale({ ...DEFAULT_CONFIG.lora, r: 16, alpha: 32 })).toBe(2);
    expect(loraScale({ ...DEFAULT_CONFIG.lora, r: 16, alpha: 32, useRslora: true })).toBe(8);
    const n = loraParamCount(KNOWN_DECODERS['Qwen/Qwen2.5-VL-3B-Instruct'], { ...DEFAULT_CONFIG.lora, r: 16 });
    // per layer: q,o 16·4096; k,v 16·2304; gate,up,down 16·13056 → 831,488 × 36 layers
    expect(n).toBe(29_933_568);
  });
});
