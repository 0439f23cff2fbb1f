import { describe, expect, it } from 'vitest';
import { sftLoss, sftTargets } from './sft.ts';

describe('sftTargets', () => {
  it('shifts labels by one: row t predicts labels[t+1]; −100 is masked', () => {
    const { targets, mask } = sftTargets([-100, -100, 5, 7, -100]);
    expect(Array.from(targets)).toEqual([0, 5, 7, 0]);
    expect(Array.from(mask)).toEqual([0, 1, 1, 0]);
    expect(sftTargets([3]).targets.length).toBe(0);
  });
});

describe('sftLoss', () => {
  it('is the mean NLL over kept rows, with token accuracy (hand values)', () => {
    const r = sftLoss({ logps: [-1, -2, -3, -4], mask: [0, 1, 1, 0], hits: [1, 1, 0, 1], entropies: [9, 1, 2, 9] });
    expect(r.loss).toBeCloseTo(2.5, 12);
    expect(Array.from(r.dlogps)).toEqual([0, -0.5, -0.5, 0]);
    expect(r.numKept).toBe(2);
    expect(r.metrics).toEqual({ loss: 2.5, num_tokens: 2, mean_token_accuracy: 0.5, entropy: 1.5 });
  });
  it('divides by a given normalizer (gradient accumulation over micro-batches)', () => {
    const a = sftLoss({ logps: [-1, -3], mask: [1, 1], normalizer: 4, inputTokens: 10 });
    expect(a.loss).toBe(1);
    expect(Array.from(a.dlogps)).toEqual([-0.25, -0.25]);
    expect(a.metrics.num_tokens).toBe(10);
    // two micro-batches with a shared normalizer sum to the big batch's loss
    const b = sftLoss({ logps: [-2, -6], mask: [1, 1], normalizer: 4 });
    expect(a.loss + b.loss).toBeCloseTo(sftLoss({ logps: [-1, -3, -2, -6], mask: [1, 1, 1, 1] }).loss, 12);
  });
  it('gives loss 0 and no gradient when nothing is kept', () => {
    const r = sftLoss({ logps: [-1, -2], mask: [0, 0], hits: [1, 1] });
    expect(r.loss).toBe(0);
    expect(Array.from(r.dlogps)).toEqual([0, 0]);
    expect(r.metrics.mean_token_accuracy).toBe(0);
  });
  it('dlogps matches finite differences', () => {
    const logps = Float64Array.from([-0.3, -1.7, -2.2, -0.01, -5]);
    const mask = [1, 0, 1, 1, 1];
    const g = sftLoss({ logps, mask }).dlogps;
    for (let i = 0; i < logps.length; i++) {
      const h = 1e-6, p = Float64Array.from(logps), m = Float64Array.from(logps);
      p[i] += h; m[i] -= h;
      expect((sftLoss({ logps: p, mask }).loss - sftLoss({ logps: m, mask }).loss) / (2 * h)).toBeCloseTo(g[i], 8);
    }
  });
  it('refuses mismatched lengths', () => {
    expect(() => sftLoss({ logps: [1, 2], mask: [1] })).toThrow(/mask has 1 entries, logps 2/);
  });
});
