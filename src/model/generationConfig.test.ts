// generation_config.json as transformers' GenerationConfig reads it: the fields generate() starts
// from, every bad field left out with a warning naming the file and the field (never an error), and
// the settings generation here does not implement named as not applied.
import { describe, expect, it } from 'vitest';
import { parseGenerationConfig, readGenerationConfig } from './generationConfig.ts';
import { memorySource } from './sources/source.ts';
import { tinySource, QWEN_IDS } from './tiny.ts';

// Qwen/Qwen2.5-VL-3B-Instruct's file (its shape: sampling, a repetition penalty, two eos ids)
const QWEN_VL = {
  bos_token_id: 151643, pad_token_id: 151643, do_sample: true, eos_token_id: [151645, 151643], repetition_penalty: 1.05,
  temperature: 0.1, top_p: 0.001, top_k: 1, transformers_version: '4.49.0',
};

describe('generation_config.json', () => {
  it("reads a hub model's sampling settings, repetition penalty and stop ids", () => {
    const g = parseGenerationConfig(JSON.stringify(QWEN_VL), 151936);
    expect(g).toEqual({ found: true, doSample: true, temperature: 0.1, topK: 1, topP: 0.001, repetitionPenalty: 1.05, eosTokenIds: [151645, 151643], warnings: [], notApplied: [] });
  });

  it('an int eos_token_id is a list of one; neutral values of unimplemented settings say nothing', () => {
    const g = parseGenerationConfig(JSON.stringify({ eos_token_id: 7, num_beams: 1, no_repeat_ngram_size: 0, max_new_tokens: 64, max_length: 300, use_cache: true }));
    expect(g).toEqual({ found: true, eosTokenIds: [7], maxNewTokens: 64, warnings: [], notApplied: [] });
  });

  it('each bad field is left out with a warning naming the file and the field; the good ones are kept', () => {
    const g = parseGenerationConfig(JSON.stringify({ do_sample: 'yes', temperature: 0, top_k: 2.5, top_p: '0.9', max_new_tokens: 0, repetition_penalty: -1, eos_token_id: [5, 200000], num_beams: 4, max_length: 50, frobnicate: 1 }), 151936);
    expect(g).toMatchObject({ found: true, notApplied: [
      'num_beams 4 from generation_config.json is not applied.',
      'max_length 50 from generation_config.json is not applied (it counts the prompt): Max new tokens is used instead.',
      'frobnicate 1 from generation_config.json is not a setting this engine knows: not applied.',
    ] });
    for (const k of ['doSample', 'temperature', 'topK', 'topP', 'maxNewTokens', 'repetitionPenalty', 'eosTokenIds']) expect(g).not.toHaveProperty(k);
    expect(g.warnings).toEqual([
      'generation_config.json: do_sample "yes" is not true or false: ignored, the transformers default is used.',
      'generation_config.json: temperature 0 is out of range (must be > 0): ignored, the transformers default is used.',
      'generation_config.json: top_k 2.5 is out of range (must be a whole number ≥ 0): ignored, the transformers default is used.',
      'generation_config.json: top_p "0.9" is not a number: ignored, the transformers default is used.',
      'generation_config.json: max_new_tokens 0 is out of range (must be a whole number ≥ 1): ignored, the transformers default is used.',
      'generation_config.json: repetition_penalty -1 is out of range (must be > 0): ignored, the transformers default is used.',
      'generation_config.json: eos_token_id [5,200000] is not a token id or a list of them (0 to 151935): ignored, the transformers default is used.',
    ]);
  });

  it('a file that is not JSON, or not an object, is ignored with a warning; null fields are transformers defaults', () => {
    expect(parseGenerationConfig('{"do_sample": tru')).toMatchObject({ found: false, notApplied: [], warnings: [expect.stringMatching(/^generation_config\.json is not valid JSON \(.*\): it is ignored, transformers' defaults are used\.$/)] });
    expect(parseGenerationConfig('[1]').warnings).toEqual(["generation_config.json is not a JSON object: it is ignored, transformers' defaults are used."]);
    expect(parseGenerationConfig('{"temperature": null, "min_p": null}')).toEqual({ found: true, warnings: [], notApplied: [] });
  });

  it('from a model source: the tiny model ships one (greedy, both Qwen stop ids); a folder without one has none', async () => {
    expect(await readGenerationConfig(tinySource())).toEqual({ found: true, doSample: false, eosTokenIds: [QWEN_IDS.imEnd, QWEN_IDS.endoftext], warnings: [], notApplied: [] });
    expect(await readGenerationConfig(memorySource({ 'config.json': new Uint8Array() }))).toEqual({ found: false, warnings: [], notApplied: [] });
  });
});
