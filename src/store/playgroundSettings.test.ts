// The Playground's sampling settings: the defaults follow transformers' GenerationConfig and our
// generate code, greedy draws no random number, and every bad value is named by its field.
import { describe, expect, it } from 'vitest';
import { SAMPLING_DEFAULTS, samplingOptions, samplingProblems } from './playgroundSettings.ts';

describe('playground sampling settings', () => {
  it('defaults: greedy, then transformers temperature 1 / top-k 50 / top-p 1, 128 tokens, seed 0', () => {
    expect(SAMPLING_DEFAULTS).toEqual({ greedy: true, temperature: 1, topK: 50, topP: 1, maxNewTokens: 128, seed: 0 });
    expect(samplingProblems(SAMPLING_DEFAULTS)).toEqual({});
    expect(samplingProblems({ ...SAMPLING_DEFAULTS, greedy: false })).toEqual({});
  });

  it('greedy passes no sampling options (no temperature: generate stays greedy); sampling passes them all', () => {
    expect(samplingOptions(SAMPLING_DEFAULTS)).toEqual({ maxNewTokens: 128 });
    expect(samplingOptions({ ...SAMPLING_DEFAULTS, greedy: false, temperature: 0.7, topK: 0, topP: 0.9, seed: 12, maxNewTokens: 40 }))
      .toEqual({ maxNewTokens: 40, temperature: 0.7, topK: 0, topP: 0.9, seed: 12 });
  });

  it('names every bad field at once; greedy ignores the sampling fields', () => {
    const bad = { greedy: false, temperature: 0, topK: 2.5, topP: 1.5, maxNewTokens: 0, seed: -1 };
    expect(Object.keys(samplingProblems(bad)).sort()).toEqual(['maxNewTokens', 'seed', 'temperature', 'topK', 'topP']);
    expect(samplingProblems({ ...bad, temperature: NaN }).temperature).toMatch(/Temperature must be greater than 0/);
    expect(Object.keys(samplingProblems({ ...bad, greedy: true }))).toEqual(['maxNewTokens']);
  });
});
