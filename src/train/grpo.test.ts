import { describe, expect, it } from 'vitest';
import { completionMetrics, grpoAdvantages, grpoLoss, type GrpoConfig, type GrpoInput } from './grpo.ts';

describe('grpoAdvantages', () => {
  it('(r − mean)/(std + 1e-4) per group, std unbiased (hand values)', () => {
    const { advantages, metrics } = grpoAdvantages([1, 0, 0, 1], 4);
    const a = 0.5 / (Math.sqrt(1 / 3) + 1e-4); // 0.8658754297607016
    expect(Array.from(advantages).map((x) => +x.toFixed(12))).toEqual([a, -a, -a, a].map((x) => +x.toFixed(12)));
    expect(metrics.reward).toBe(0.5);
    expect(metrics.reward_std).toBeCloseTo(Math.sqrt(1 / 3), 14);
    expect(metrics.frac_reward_zero_std).toBe(0);
  });
  it('groups are independent; a constant group has zero advantages and counts in frac_reward_zero_std', () => {
    const { advantages, metrics } = grpoAdvantages([2, 2, 0, 4], 2);
    expect(Array.from(advantages.slice(0, 2))).toEqual([0, 0]);
    const s = Math.SQRT2 * 2; // std of [0, 4]
    expect(advantages[2]).toBeCloseTo(-2 / (s + 1e-4), 14);
    expect(metrics.frac_reward_zero_std).toBe(0.5);
    expect(metrics.reward_std).toBeCloseTo(s / 2, 14);
  });
  it("scaleRewards 'batch' divides by the batch std (group mean kept); 'none' does not divide", () => {
    const r = [2, 2, 0, 4];
    const bs = Math.sqrt(((0 + 0 + 4 + 4) / 3)); // batch mean 2
    const b = grpoAdvantages(r, 2, { scaleRewards: 'batch' });
    expect(b.advantages[3]).toBeCloseTo(2 / (bs + 1e-4), 14);
    expect(b.metrics.reward_std).toBeCloseTo(bs, 14);
    const n = grpoAdvantages(r, 2, { scaleRewards: 'none' });
    expect(Array.from(n.advantages)).toEqual([0, 0, -2, 2]);
  });
  it('per-function metrics ignore NaN (not applicable)', () => {
    const { metrics } = grpoAdvantages([1, 2, 3, 4], 4, { perFunc: { iou: [0.5, NaN, 0.7, 0.9], format: [1, 1, 0, 1] } });
    expect(metrics['rewards/iou/mean']).toBeCloseTo(0.7, 14);
    expect(metrics['rewards/iou/std']).toBeCloseTo(0.2, 14);
    expect(metrics['rewards/format/mean']).toBe(0.75);
    expect(metrics['rewards/format/std']).toBeCloseTo(0.5, 14);
    expect(() => grpoAdvantages([1, 2, 3], 2)).toThrow(/not whole groups/);
  });
});

describe('completionMetrics', () => {
  it('lengths from the mask; clipped = no eos', () => {
    const m = completionMetrics([1, 1, 0, 1, 1, 1, 1, 0, 0], 3, [1, 0, 1]);
    expect(m).toEqual({
      'completions/mean_length': 2, 'completions/min_length': 1, 'completions/max_length': 3,
      'completions/clipped_ratio': 1 - 2 / 3,
      'completions/mean_terminated_length': 1.5, 'completions/min_terminated_length': 1, 'completions/max_terminated_length': 2,
    });
  });
});

const cfg = (c: Partial<GrpoConfig> = {}): GrpoConfig => ({ beta: 0, epsilon: 0.2, ...c });

describe('grpoLoss', () => {
  it('clips the ratio in the direction of the advantage (hand values, one token each)', () => {
    const inp: GrpoInput = { logps: [0.5, 0.5, -0.5, -0.5, 0.1], oldLogps: [0, 0, 0, 0, 0], mask: [1, 1, 1, 1, 1], advantages: [1, -1, 1, -1, 1], cols: 1 };
    const r = grpoLoss(inp, cfg({ lossType: 'bnpo' }));
    const e5 = Math.exp(0.5), em5 = Math.exp(-0.5), e1 = Math.exp(0.1);
    // A>0 above 1+ε: clipped, no gradient; A<0 above: unclipped; A>0 below 1−ε: unclipped; A<0 below: clipped
    expect(Array.from(r.perTokenLoss).map((x) => +x.toFixed(12))).toEqual([-1.2, e5, -em5, 0.8, -e1].map((x) => +x.toFixed(12)));
    const d = [0, e5, -em5, 0, -e1].map((x) => x / 5);
    r.dlogps.forEach((g, i) => expect(g).toBeCloseTo(d[i], 14));
    expect(r.metrics['clip_ratio/high_mean']).toBe(0.2);
    expect(r.metrics['clip_ratio/low_mean']).toBe(0.2);
    expect(r.metrics['clip_ratio/region_mean']).toBe(0.4);
    expect(r.metrics.kl).toBeUndefined(); // beta = 0: no KL, no reference needed
  });
  it('epsilonHigh widens only the upper bound; delta caps the unclipped ratio', () => {
    const inp: GrpoInput = { logps: [0.25, 1.0], oldLogps: [0, 0], mask: [1, 1], advantages: [1, -1], cols: 1 };
    const r = grpoLoss(inp, cfg({ epsilonHigh: 0.3, lossType: 'bnpo' }));
    expect(r.perTokenLoss[0]).toBeCloseTo(-Math.exp(0.25), 14); // 1.284 < 1.3: not clipped
    const d = grpoLoss(inp, cfg({ delta: 2, lossType: 'bnpo' }));
    expect(d.perTokenLoss[1]).toBeCloseTo(2, 14); // −min(−2, −1.2) with ratio e ≈ 2.718 capped at 2
    expect(d.dlogps[1]).toBe(0);
  });
  it('adds β·k3 KL and its gradient; the reference is required only when beta ≠ 0', () => {
    const inp: GrpoInput = { logps: [-1], refLogps: [-1.5], mask: [1], advantages: [0], cols: 1 };
    const r = grpoLoss(inp, cfg({ beta: 0.1 }));
    const kl = Math.exp(-0.5) + 0.5 - 1;
    expect(r.perTokenKl![0]).toBeCloseTo(kl, 14);
    expect(r.loss).toBeCloseTo(0.1 * kl, 14);
    expect(r.dlogps[0]).toBeCloseTo(0.1 * (1 - Math.exp(-0.5)), 14);
    expect(r.metrics.kl).toBeCloseTo(kl, 14);
    expect(() => grpoLoss({ ...inp, refLogps: undefined }, cfg({ beta: 0.1 }))).toThrow(/needs refLogps/);
    expect(() => grpoLoss({ ...inp, refLogps: undefined }, cfg())).not.toThrow();
  });
  it('reduces by loss type: grpo, bnpo, dr_grpo, dapo (hand values)', () => {
    // on-policy (ratio 1): ℓ = −A on real tokens. Row 0: A=1, 1 token; row 1: A=−2, 3 tokens; T = 4
    const inp: GrpoInput = { logps: [-1, 0, 0, 0, -1, -2, -3, 0], mask: [1, 0, 0, 0, 1, 1, 1, 0], advantages: [1, -2], cols: 4 };
    expect(grpoLoss(inp, cfg({ lossType: 'grpo' })).loss).toBeCloseTo((-1 + 2) / 2, 14);
    expect(grpoLoss(inp, cfg({ lossType: 'bnpo' })).loss).toBeCloseTo((-1 + 6) / 4, 14);
    expect(grpoLoss(inp, cfg({ lossType: 'dr_grpo' })).loss).toBeCloseTo((-1 + 6) / 8, 14);
    expect(grpoLoss(inp, cfg({ lossType: 'dr_grpo', maxCompletionLength: 10 })).loss).toBeCloseTo((-1 + 6) / 20, 14);
    expect(grpoLoss(inp, cfg({ lossType: 'dapo' })).loss).toBeCloseTo((-1 + 6) / 4, 14);
    expect(grpoLoss(inp, cfg({ lossType: 'dapo', numItemsInBatch: 10 })).loss).toBeCloseTo((-1 + 6) / 10, 14);
    expect(grpoLoss(inp, cfg({ lossType: 'grpo', gradientAccumulationSteps: 2 })).loss).toBeCloseTo(0.25, 14);
    // on-policy gradient: −A·1·weight
    const g = grpoLoss(inp, cfg({ lossType: 'grpo' })).dlogps;
    expect(Array.from(g)).toEqual([-0.5, 0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 0]);
  });
  it('omitting oldLogps is the on-policy case: old = current logps, ratio 1', () => {
    const inp: GrpoInput = { logps: [-1, -0.2, -3, -0.7], refLogps: [-1.1, -0.1, -2, -0.9], mask: [1, 1, 1, 0], advantages: [0.7, -1.3], cols: 2 };
    const a = grpoLoss(inp, cfg({ beta: 0.04 }));
    const b = grpoLoss({ ...inp, oldLogps: inp.logps }, cfg({ beta: 0.04 }));
    expect(a.loss).toBe(b.loss);
    expect(Array.from(a.dlogps)).toEqual(Array.from(b.dlogps));
    expect(a.metrics['clip_ratio/region_mean']).toBe(0);
  });
  it('dlogps matches finite differences for every loss type (ratios inside and outside the clip range)', () => {
    const R = 4, T = 5;
    let seed = 7;
    const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const logps = new Float64Array(R * T), old = new Float64Array(R * T), ref = new Float64Array(R * T), mask = new Float64Array(R * T);
    const lens = [5, 3, 1, 4];
    for (let r = 0; r < R; r++) for (let t = 0; t < T; t++) {
      const i = r * T + t;
      logps[i] = -0.1 - 3 * rnd();
      // log-ratio spread over ±0.6, kept ≥ 0.02 away from the kinks at log(1 ± 0.2) and log(1.28)
      let lr = -0.6 + 1.2 * rnd();
      for (const k of [Math.log(0.8), Math.log(1.2), Math.log(1.28)]) if (Math.abs(lr - k) < 0.02) lr = k + 0.05;
      old[i] = logps[i] - lr;
      ref[i] = logps[i] + (rnd() - 0.5);
      mask[i] = t < lens[r] ? 1 : 0;
    }
    const advantages = [1.1, -0.4, 0.9, -1.6];
    for (const lossType of ['grpo', 'bnpo', 'dr_grpo', 'dapo'] as const) {
      for (const c of [cfg({ lossType, beta: 0.04 }), cfg({ lossType, beta: 0, epsilonHigh: 0.28 })]) {
        const inp: GrpoInput = { logps, oldLogps: old, refLogps: ref, mask, advantages, cols: T };
        const g = grpoLoss(inp, c).dlogps;
        for (let i = 0; i < R * T; i++) {
          const h = 1e-6, p = Float64Array.from(logps), m = Float64Array.from(logps);
          p[i] += h; m[i] -= h;
          const fd = (grpoLoss({ ...inp, logps: p }, c).loss - grpoLoss({ ...inp, logps: m }, c).loss) / (2 * h);
          expect(Math.abs(fd - g[i])).toBeLessThan(1e-8);
        }
      }
    }
  });
});
