import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, mergeConfig } from '../config/config.ts';
import { recordWhere, sampledTokens } from './examples.ts';

describe('sampledTokens', () => {
  it("is the RL method's own max new tokens, and none for SFT / DPO", () => {
    const c = mergeConfig(DEFAULT_CONFIG, { grpo: { maxNewTokens: 17 }, ppo: { maxNewTokens: 23 } });
    expect(sampledTokens({ ...c, method: 'grpo' })).toBe(17);
    expect(sampledTokens({ ...c, method: 'ppo' })).toBe(23);
    expect(sampledTokens({ ...c, method: 'sft' })).toBeUndefined();
    expect(sampledTokens({ ...c, method: 'dpo' })).toBeUndefined();
  });
});

describe('recordWhere', () => {
  it('numbers the question only when the image has several', () => {
    expect(recordWhere('cat.png', 0, 1)).toBe('image "cat.png"');
    expect(recordWhere('cat.png', 1, 3)).toBe('image "cat.png" (question 2)');
  });
});
