// The Playground's sampling settings: the defaults follow the model's generation_config.json, else
// transformers' GenerationConfig and our generate code, field by field (each says where it came
// from), greedy draws no random number, and every bad value is named by its field.
import { describe, expect, it } from 'vitest';
import { DEFAULT_SOURCES, FROM_FILE, modelDefaults, SAMPLING_DEFAULTS, samplingOptions, samplingProblems, TRANSFORMERS_DEFAULTS } from './playgroundSettings.ts';
import { parseGenerationConfig } from '../model/generationConfig.ts';

describe('playground sampling settings', () => {
  it('defaults: greedy, then transformers temperature 1 / top-k 50 / top-p 1, 128 tokens, seed 0, no repetition penalty', () => {
    expect(SAMPLING_DEFAULTS).toEqual({ greedy: true, temperature: 1, topK: 50, topP: 1, maxNewTokens: 128, seed: 0, repetitionPenalty: 1 });
    expect(samplingProblems(SAMPLING_DEFAULTS)).toEqual({});
    expect(samplingProblems({ ...SAMPLING_DEFAULTS, greedy: false })).toEqual({});
  });

  it('greedy passes no sampling options (no temperature: generate stays greedy); sampling passes them all', () => {
    expect(samplingOptions(SAMPLING_DEFAULTS)).toEqual({ maxNewTokens: 128 });
    expect(samplingOptions({ ...SAMPLING_DEFAULTS, greedy: false, temperature: 0.7, topK: 0, topP: 0.9, seed: 12, maxNewTokens: 40 }))
      .toEqual({ maxNewTokens: 40, temperature: 0.7, topK: 0, topP: 0.9, seed: 12 });
    // a repetition penalty applies greedy or sampled
    expect(samplingOptions({ ...SAMPLING_DEFAULTS, repetitionPenalty: 1.05 })).toEqual({ maxNewTokens: 128, repetitionPenalty: 1.05 });
  });

  it('names every bad field at once; greedy ignores the sampling fields', () => {
    const bad = { greedy: false, temperature: 0, topK: 2.5, topP: 1.5, maxNewTokens: 0, seed: -1, repetitionPenalty: 0 };
    expect(Object.keys(samplingProblems(bad)).sort()).toEqual(['maxNewTokens', 'repetitionPenalty', 'seed', 'temperature', 'topK', 'topP']);
    expect(samplingProblems({ ...bad, temperature: NaN }).temperature).toMatch(/Temperature must be greater than 0/);
    expect(Object.keys(samplingProblems({ ...bad, greedy: true }))).toEqual(['maxNewTokens', 'repetitionPenalty']);
  });

  it("starts from the model's generation_config.json field by field, naming where each default came from", () => {
    const d = modelDefaults(parseGenerationConfig(JSON.stringify({ do_sample: true, temperature: 0.7, top_p: 0.8, eos_token_id: [151645, 151643], repetition_penalty: 1.05 })));
    expect(d.sampling).toEqual({ greedy: false, temperature: 0.7, topK: 50, topP: 0.8, maxNewTokens: 128, seed: 0, repetitionPenalty: 1.05 });
    expect(d.sources).toEqual({ ...DEFAULT_SOURCES, greedy: `${FROM_FILE}: do_sample true`, temperature: FROM_FILE, topP: FROM_FILE, repetitionPenalty: FROM_FILE });
    expect(d.sources.topK).toBe('transformers default');
    expect(d.eosTokenIds).toEqual([151645, 151643]);
    expect(d.notApplied).toEqual([]);
    expect(d.warnings).toEqual([]);
    expect(samplingProblems(d.sampling)).toEqual({});
  });

  it('no file: the transformers defaults; a value the form refuses is left out with a warning naming the file and field', () => {
    expect(modelDefaults({ found: false, warnings: [], notApplied: [] })).toEqual(TRANSFORMERS_DEFAULTS);
    const d = modelDefaults(parseGenerationConfig(JSON.stringify({ do_sample: false, temperature: 50, max_new_tokens: 10000, top_k: '5' })));
    expect(d.sampling).toEqual({ ...SAMPLING_DEFAULTS });
    expect(d.sources.greedy).toBe(`${FROM_FILE}: do_sample false`);
    expect(d.sources.temperature).toBe('transformers default');
    expect(d.warnings).toEqual([
      'generation_config.json: top_k "5" is not a number: ignored, the transformers default is used.',
      'generation_config.json: temperature 50 is out of range here (Temperature must be greater than 0 and at most 10 (greedy decoding is the checkbox)): ignored, the transformers default is used.',
      'generation_config.json: max_new_tokens 10000 is out of range here (Max new tokens must be a whole number from 1 to 4096): ignored, the transformers default is used.',
    ]);
  });
});
