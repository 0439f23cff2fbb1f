import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, TRL_NAMES, totalSteps, type TrainConfig } from './config.ts';
import { editDistance, errorsByPath, formatErrors, nearestKey, parseConfig, validate } from './validate.ts';

const withPatch = (f: (c: TrainConfig) => void): TrainConfig => {
  const c = structuredClone(DEFAULT_CONFIG);
  f(c);
  return c;
};
const paths = (c: unknown, ctx = {}) => validate(c, ctx).map((e) => e.path).sort();

describe('the defaults', () => {
  it('are valid, for every method', () => {
    for (const method of ['sft', 'dpo', 'grpo', 'ppo'] as const) expect(validate({ ...DEFAULT_CONFIG, method })).toEqual([]);
  });

  it('are trl / peft / transformers defaults where those suit one GPU (documented in config.ts)', () => {
    const c = DEFAULT_CONFIG;
    expect([c.lora.r, c.lora.alpha, c.lora.dropout]).toEqual([16, 32, 0.05]); // trl ModelConfig
    expect([c.optim.warmupSteps, c.optim.gradAccumSteps, c.optim.lrScheduler, c.optim.maxGradNorm, c.optim.seed]).toEqual([0, 1, 'linear', 1, 42]); // TrainingArguments
    expect([c.optim.beta1, c.optim.beta2, c.optim.eps]).toEqual([0.9, 0.999, 1e-8]);
    expect([c.dpo.beta, c.grpo.beta, c.grpo.epsilon]).toEqual([0.1, 0, 0.2]); // DPOConfig, GRPOConfig
    expect(c.grpo.maxNewTokens).toBe(c.ppo.maxNewTokens);
    expect(c.optim.saveSteps).toBeGreaterThan(0); // the CLI checkpoints periodically by default
  });

  it('every trl name maps onto a real config path', () => {
    for (const [name, path] of Object.entries(TRL_NAMES)) expect(validate(parseConfig({ [name]: undefined }).config), name).toEqual([]), expect(path).toMatch(/^\w+\.\w+$/);
  });
});

describe('unknown keys', () => {
  it('are errors that suggest the nearest valid key (trl spelling)', () => {
    const { errors } = parseConfig({ learing_rate: 1e-4 });
    expect(errors).toHaveLength(1);
    expect(errors[0].path).toBe('learing_rate');
    expect(errors[0].message).toMatch(/did you mean "optim\.learningRate" \(trl: learning_rate\)/);
  });

  it('inside a section suggest the key of that section', () => {
    const [e] = validate({ ...DEFAULT_CONFIG, optim: { ...DEFAULT_CONFIG.optim, learingRate: 1 } });
    expect(e).toMatchObject({ path: 'optim.learingRate' });
    expect(e.message).toMatch(/did you mean "optim\.learningRate" \(trl: learning_rate\)\?/);
  });

  it('in the wrong section suggest where the key lives', () => {
    const { errors } = parseConfig({ optim: { maxPixels: 100000 } });
    expect(errors.map((e) => e.path)).toEqual(['optim.maxPixels']);
    expect(errors[0].message).toMatch(/did you mean "data\.maxPixels"/);
  });

  it('with nothing close list what is valid', () => {
    const { errors } = parseConfig({ dpo: { zzzzzzzz: 1 } });
    expect(errors[0].message).toMatch(/valid here: beta, labelSmoothing/);
  });

  it('a section given as a number is an error, not a silent default', () => {
    expect(parseConfig({ optim: 5 }).errors.map((e) => e.path)).toEqual(['optim']);
  });

  it('an unknown key inside model.local is caught too', () => {
    expect(paths({ ...DEFAULT_CONFIG, model: { ...DEFAULT_CONFIG.model, source: 'local', local: { name: 'm', files: ['config.json', 'tokenizer.json', 'a.safetensors'], path: 'x' } } })).toEqual(['model.local.path']);
  });

  it('nearestKey / editDistance', () => {
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(editDistance('stpes', 'steps')).toBe(1); // a swap is one edit
    expect(nearestKey('lora_alpah', ['alpha', 'lora_alpha', 'r'])).toBe('lora_alpha');
    expect(nearestKey('gradient_acumulation', ['gradAccumSteps'])).toBeUndefined();
    expect(nearestKey('gradAcumSteps', ['gradAccumSteps'])).toBe('gradAccumSteps');
  });
});

describe('types and ranges', () => {
  it('learning rates that diverge, and non-finite ones, are refused with a message', () => {
    for (const lr of [1, 1e10, 1e38, 0, -1e-4, NaN, Infinity, '1e-4']) {
      const e = validate(withPatch((c) => (c.optim.learningRate = lr as number)));
      expect(e.map((x) => x.path), String(lr)).toEqual(['optim.learningRate']);
      expect(e[0].message).toMatch(/\(0, 1\).*Got/);
    }
  });

  it('steps and batch are integers in range (batch 1e6 would hang)', () => {
    expect(paths(withPatch((c) => (c.optim.batchSize = 1e6)))).toEqual(['optim.batchSize']);
    expect(paths(withPatch((c) => (c.optim.batchSize = 0)))).toEqual(['optim.batchSize']);
    expect(paths(withPatch((c) => (c.optim.maxSteps = 2.5)))).toEqual(['optim.maxSteps']);
    expect(paths(withPatch((c) => (c.optim.maxSteps = NaN)))).toEqual(['optim.maxSteps']);
    expect(paths(withPatch((c) => (c.optim.maxSteps = 1e7)))).toEqual(['optim.maxSteps']);
    expect(paths(withPatch((c) => (c.optim.gradAccumSteps = -1)))).toEqual(['optim.gradAccumSteps']);
    expect(paths(withPatch((c) => (c.optim.seed = 2 ** 32)))).toEqual(['optim.seed']);
    expect(paths(withPatch((c) => (c.optim.saveSteps = -5)))).toEqual(['optim.saveSteps']);
  });

  it('LoRA, pixels, quantisation and method fields', () => {
    expect(paths(withPatch((c) => (c.lora.dropout = 1)))).toEqual(['lora.dropout']);
    expect(paths(withPatch((c) => (c.lora.r = 512)))).toEqual(['lora.r']);
    expect(paths(withPatch((c) => (c.data.maxPixels = 1e9)))).toEqual(['data.maxPixels']);
    expect(paths(withPatch((c) => (c.model.quantize = 'int8' as never)))).toEqual(['model.quantize']);
    expect(paths(withPatch((c) => (c.model.quantizeVision = 'yes' as never)))).toEqual(['model.quantizeVision']);
    expect(paths(withPatch((c) => (c.method = 'orpo' as never)))).toEqual(['method']);
    expect(paths(withPatch((c) => ((c.method = 'grpo'), (c.grpo.rewards = ['iou', 'iou']))))).toEqual(['grpo.rewards']);
    expect(paths(withPatch((c) => ((c.method = 'grpo'), (c.grpo.rewards = ['bleu' as never]))))).toEqual(['grpo.rewards']);
    expect(paths(withPatch((c) => ((c.method = 'dpo'), (c.dpo.labelSmoothing = 0.7))))).toEqual(['dpo.labelSmoothing']);
  });

  it('PPO epochs and mini-batches: trl defaults 4 and 1, whole numbers ≥ 1, trl names, in the step count', () => {
    expect([DEFAULT_CONFIG.ppo.numPpoEpochs, DEFAULT_CONFIG.ppo.numMiniBatches]).toEqual([4, 1]); // trl PPOConfig
    const ppo = (f: (c: TrainConfig) => void) => withPatch((c) => ((c.method = 'ppo'), f(c)));
    expect(paths(ppo((c) => (c.ppo.numPpoEpochs = 0)))).toEqual(['ppo.numPpoEpochs']);
    expect(paths(ppo((c) => (c.ppo.numPpoEpochs = 2.5)))).toEqual(['ppo.numPpoEpochs']);
    expect(paths(ppo((c) => (c.ppo.numPpoEpochs = 1000)))).toEqual(['ppo.numPpoEpochs']);
    expect(paths(ppo((c) => (c.ppo.numMiniBatches = 0)))).toEqual(['ppo.numMiniBatches']);
    expect(paths(ppo((c) => (c.ppo.numMiniBatches = '2' as never)))).toEqual(['ppo.numMiniBatches']);
    expect(validate(ppo((c) => ((c.ppo.numPpoEpochs = 1), (c.ppo.numMiniBatches = 2))))).toEqual([]);
    expect(validate(withPatch((c) => (c.ppo.numPpoEpochs = 0)))).toEqual([]); // not checked for SFT
    const { config, errors } = parseConfig({ method: 'ppo', num_ppo_epochs: 2, num_mini_batches: 3 });
    expect(errors).toEqual([]);
    expect([config.ppo.numPpoEpochs, config.ppo.numMiniBatches]).toEqual([2, 3]);
    expect(totalSteps({ ...config, optim: { ...config.optim, numEpochs: 1 } }, 12)).toBe(4); // 12 prompts, rollouts of 1 × 1 × 3
    expect(totalSteps({ ...config, method: 'grpo', optim: { ...config.optim, numEpochs: 1 } }, 12)).toBe(12);
  });

  it('method settings are checked only for their method', () => {
    const c = withPatch((c) => (c.grpo.numGenerations = 1));
    expect(validate(c)).toEqual([]);
    expect(paths({ ...c, method: 'grpo' })).toEqual(['grpo.numGenerations']);
  });

  it('all problems are reported at once', () => {
    const e = validate(withPatch((c) => {
      c.optim.learningRate = 5;
      c.optim.batchSize = 0.5;
      c.lora.targetModules = [];
      c.data.maxLength = 10;
    }));
    expect(e.map((x) => x.path).sort()).toEqual(['data.maxLength', 'lora.targetModules', 'optim.batchSize', 'optim.learningRate']);
    expect(formatErrors(e, 'run.json')).toMatch(/^run\.json has 4 problems:\n/);
    expect(formatErrors(e, 'run.json')).toMatch(/\n {2}optim\.learningRate: The learning rate/);
  });
});

describe('cross-field rules', () => {
  it('min pixels ≤ max pixels', () => {
    const e = errorsByPath(validate(withPatch((c) => ((c.data.minPixels = 200704), (c.data.maxPixels = 100352)))));
    expect(e['data.maxPixels']).toMatch(/100352.*≥ min pixels \(200704\)/);
  });

  it('warmup shorter than the run, from max steps or from epochs × dataset size', () => {
    expect(errorsByPath(validate(withPatch((c) => ((c.optim.maxSteps = 5), (c.optim.warmupSteps = 10)))))['optim.warmupSteps']).toMatch(/10.*5 steps/);
    const c = withPatch((c) => ((c.optim.warmupSteps = 20), (c.optim.numEpochs = 1)));
    expect(validate(c)).toEqual([]);
    expect(errorsByPath(validate(c, { datasetSize: 8 }))['optim.warmupSteps']).toMatch(/8 steps: 1 epochs of 8 examples/);
  });

  it('batch and steps against the dataset size', () => {
    expect(errorsByPath(validate(withPatch((c) => (c.optim.batchSize = 16)), { datasetSize: 3 }))['optim.batchSize']).toMatch(/16 is more than the dataset's 3 examples/);
    expect(paths(withPatch((c) => (c.optim.numEpochs = 1000)), { datasetSize: 5000 })).toEqual(['optim.numEpochs']);
    expect(validate(DEFAULT_CONFIG, { datasetSize: 0 })[0].message).toMatch(/no training examples for SFT/);
    expect(totalSteps(DEFAULT_CONFIG, 10)).toBe(30);
  });

  it('GRPO completions leave room for the prompt', () => {
    expect(paths(withPatch((c) => ((c.method = 'grpo'), (c.grpo.maxNewTokens = 4096))))).toEqual(['grpo.maxNewTokens']);
  });
});

describe('parseConfig (the CLI --config JSON)', () => {
  it('lays a partial config over the defaults; trl names set their path', () => {
    const { config, errors } = parseConfig({ learning_rate: 1e-4, lora: { r: 8 }, num_train_epochs: 2 });
    expect(errors).toEqual([]);
    expect(config.optim.learningRate).toBe(1e-4);
    expect(config.optim.numEpochs).toBe(2);
    expect(config.lora).toEqual({ ...DEFAULT_CONFIG.lora, r: 8 });
  });

  it('the same setting under two names is an error', () => {
    expect(parseConfig({ learning_rate: 1e-4, optim: { learningRate: 2e-4 } }).errors[0].message).toMatch(/both set optim\.learningRate/);
  });

  it('a value of the wrong type in a partial config is named', () => {
    expect(parseConfig({ optim: { maxSteps: 'abc' } }).errors.map((e) => e.path)).toEqual(['optim.maxSteps']);
    expect(parseConfig([1, 2]).errors[0].message).toMatch(/JSON object/);
  });

  it('the model source is checked unless the caller names its own model', () => {
    const c = withPatch((c) => ((c.model.source = 'hub'), (c.model.hubId = 'not a hub id'), (c.model.endpoint = 'ftp://x')));
    expect(paths(c)).toEqual(['model.endpoint', 'model.hubId']);
    expect(validate(c, { modelSource: false })).toEqual([]);
  });
});
