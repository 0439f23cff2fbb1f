import { describe, expect, it } from 'vitest';
import { dpoLoss, logSigmoid, type DpoConfig, type DpoInput } from './dpo.ts';

// One pair: πc = −3, rc = −3.5, πr = −2, rr = −1 → margin m = 0.5 − (−1) = 1.5
const PAIR: DpoInput = { policyChosen: [[-1, -2]], refChosen: [[-1.5, -2]], policyRejected: [[-2]], refRejected: [[-1]] };

function fdCheck(inp: DpoInput, cfg: DpoConfig) {
  const r = dpoLoss(inp, cfg);
  for (const side of ['policyChosen', 'policyRejected'] as const) {
    const grads = side === 'policyChosen' ? r.dChosen : r.dRejected;
    inp[side].forEach((seq, b) => {
      for (let k = 0; k < seq.length; k++) {
        const h = 1e-6;
        const shifted = (d: number) => {
          const copy = inp[side].map((s) => Float64Array.from(s));
          copy[b][k] += d;
          return dpoLoss({ ...inp, [side]: copy }, cfg).loss;
        };
        expect((shifted(h) - shifted(-h)) / (2 * h)).toBeCloseTo(grads[b][k], 7);
      }
    });
  }
}

describe('dpoLoss', () => {
  it('sigmoid loss, rewards and metrics (hand values)', () => {
    const r = dpoLoss(PAIR, { beta: 0.1 });
    expect(r.loss).toBeCloseTo(0.6209570477895321, 12); // −log σ(0.15)
    expect(r.chosenRewards[0]).toBeCloseTo(0.05, 12);
    expect(r.rejectedRewards[0]).toBeCloseTo(-0.1, 12);
    expect(r.metrics['rewards/accuracies']).toBe(1);
    expect(r.metrics['rewards/margins']).toBeCloseTo(0.15, 12);
    expect(r.metrics['logps/chosen']).toBe(-3);
    expect(r.metrics['logps/rejected']).toBe(-2);
    // d loss / d πc = −β·σ(−β·m), the same for every chosen token; opposite for rejected tokens
    const g = -0.1 * (1 / (1 + Math.exp(0.15)));
    expect(Array.from(r.dChosen[0]).map((x) => x.toFixed(12))).toEqual([g, g].map((x) => x.toFixed(12)));
    expect(r.dRejected[0][0]).toBeCloseTo(-g, 12);
  });
  it('label smoothing (conservative DPO)', () => {
    expect(dpoLoss(PAIR, { beta: 0.1, labelSmoothing: 0.1 }).loss).toBeCloseTo(0.6359570477895321, 12);
  });
  it('hinge and ipo (ipo averages token logps)', () => {
    expect(dpoLoss(PAIR, { beta: 0.1, lossType: 'hinge' }).loss).toBeCloseTo(0.85, 12);
    expect(dpoLoss(PAIR, { beta: 2, lossType: 'hinge' }).loss).toBe(0);
    // ipo: πc = −1.5, rc = −1.75, πr = −2, rr = −1 → m = 0.25 + 1 = 1.25; (1.25 − 1/(2·0.5))² = 0.0625
    const r = dpoLoss(PAIR, { beta: 0.5, lossType: 'ipo' });
    expect(r.loss).toBeCloseTo(0.0625, 12);
    expect(r.metrics['logps/chosen']).toBe(-1.5);
  });
  it('means over pairs; accuracies count chosen > rejected', () => {
    const two: DpoInput = {
      policyChosen: [[-1, -2], [-4]], refChosen: [[-1.5, -2], [-3]],
      policyRejected: [[-2], [-1, -1]], refRejected: [[-1], [-1, -1]],
    };
    const r = dpoLoss(two, { beta: 0.1 });
    expect(r.losses.length).toBe(2);
    expect(r.loss).toBeCloseTo((r.losses[0] + r.losses[1]) / 2, 14);
    expect(r.losses[1]).toBeCloseTo(-logSigmoid(-0.1), 12);
    expect(r.metrics['rewards/accuracies']).toBe(0.5);
  });
  it('gradients match finite differences for every loss type', () => {
    const inp: DpoInput = {
      policyChosen: [[-0.7, -1.9, -0.2], [-2.5]], refChosen: [[-0.9, -1.1, -0.4], [-2.0]],
      policyRejected: [[-1.2, -0.4], [-0.3, -3.1, -0.8]], refRejected: [[-1.0, -0.9], [-0.6, -2.2, -1.0]],
    };
    fdCheck(inp, { beta: 0.1 });
    fdCheck(inp, { beta: 0.3, labelSmoothing: 0.2 });
    fdCheck(inp, { beta: 0.1, lossType: 'hinge' });
    fdCheck(inp, { beta: 0.4, lossType: 'ipo' });
  });
  it('is stable for large margins and refuses bad input', () => {
    expect(logSigmoid(1000)).toBe(-0);
    expect(logSigmoid(-1000)).toBe(-1000);
    const far = dpoLoss({ policyChosen: [[0]], refChosen: [[-5000]], policyRejected: [[0]], refRejected: [[0]] }, { beta: 1 });
    expect(far.loss).toBe(0);
    expect(Number.isFinite(far.dChosen[0][0])).toBe(true);
    expect(() => dpoLoss({ ...PAIR, refChosen: [[-1]] }, { beta: 0.1 })).toThrow(/pair 0: chosen has 2 policy and 1 reference/);
    expect(() => dpoLoss(PAIR, { beta: 0 })).toThrow(/beta must be positive/);
    expect(() => dpoLoss(PAIR, { beta: 0.1, lossType: 'ipo', labelSmoothing: 0.1 })).toThrow(/label_smoothing/);
  });
});
