import { describe, expect, it } from 'vitest';
import { maskedVar, maskedWhiten, PPO_DEFAULTS, ppoEpochs, ppoLoss, ppoRollout, ppoSchedule, type PpoConfig, type PpoLossInput } from './ppo.ts';

describe('masked_whiten', () => {
  it('whitens over the mask with the unbiased variance (hand values)', () => {
    const w = maskedWhiten([1, 2, 3, 99], [1, 1, 1, 0]);
    const s = 1 / Math.sqrt(1 + 1e-8);
    expect(Array.from(w)).toEqual([-s, 0, s, 0]);
    expect(maskedVar([1, 2, 3], [1, 1, 1])).toBe(1);
    expect(Array.from(maskedWhiten([1, 3], [1, 1], false)).map((x) => +x.toFixed(6))).toEqual([1.292893, 2.707107]);
    expect(() => maskedVar([1, 2], [1, 0])).toThrow(/at least 2/);
  });
});

describe('ppoRollout', () => {
  const cfg: PpoConfig = { ...PPO_DEFAULTS, klCoef: 0.1, gamma: 0.9, lam: 0.8 };
  it('KL-penalised rewards with the score on the last real token, GAE, returns (hand values)', () => {
    // row 0: two real tokens then padding; row 1: one token
    const r = ppoRollout({
      logps: [-1, -2, 0, -1, 0, 0], refLogps: [-1.5, -1.5, 0, -1, 0, 0], values: [0.5, 0.2, 7, 0.3, 7, 7],
      scores: [2, -1], mask: [1, 1, 0, 1, 0, 0], cols: 3,
    }, cfg);
    expect(Array.from(r.kl).map((x) => x + 0)).toEqual([0.5, -0.5, 0, 0, 0, 0]);
    expect(Array.from(r.rewards).map((x) => +x.toFixed(12))).toEqual([-0.05, 2.05, 0, -1, 0, 0]);
    // row 0: A1 = 2.05 − 0.2 = 1.85; A0 = −0.05 + 0.9·0.2 − 0.5 + 0.72·1.85 = 0.962. Row 1: A = −1 − 0.3
    expect(Array.from(r.returns).map((x) => +x.toFixed(12))).toEqual([1.462, 2.05, 0, -1, 0, 0]);
    const raw = [0.962, 1.85, -1.3];
    const m = (raw[0] + raw[1] + raw[2]) / 3;
    const sd = Math.sqrt(raw.reduce((s, x) => s + (x - m) ** 2, 0) / 2 + 1e-8);
    [0, 1, 3].forEach((i, k) => expect(r.advantages[i]).toBeCloseTo((raw[k] - m) / sd, 12));
    expect(r.advantages[2]).toBe(0);
    expect(r.metrics['objective/kl']).toBeCloseTo(0, 14);
    expect(r.metrics['objective/scores']).toBe(0.5);
    expect(r.metrics['objective/entropy']).toBeCloseTo(2, 14); // −(−1 −2 −1)/2
    expect(r.metrics['objective/non_score_reward']).toBeCloseTo(0, 14);
    expect(r.metrics['objective/rlhf_reward']).toBeCloseTo(0.5, 14);
  });
  it('k3 estimator and whitened rewards', () => {
    const base = { logps: [-1, -2], refLogps: [-1.5, -1.5], values: [0, 0], scores: [1], mask: [1, 1], cols: 2 };
    const r = ppoRollout(base, { ...cfg, klEstimator: 'k3' });
    expect(r.kl[0]).toBeCloseTo(Math.exp(-0.5) - 1 + 0.5, 14);
    expect(r.kl[1]).toBeCloseTo(Math.exp(0.5) - 1 - 0.5, 14);
    const w = ppoRollout(base, { ...cfg, whitenRewards: true });
    const raw = [-0.05, 0.05 + 1];
    expect(Array.from(w.rewards)).toEqual(Array.from(maskedWhiten(raw, [1, 1], false)));
  });
});

function lossInput(): PpoLossInput {
  let seed = 11;
  const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  const R = 3, T = 4, N = R * T;
  const f = () => new Float64Array(N);
  const inp = { logps: f(), values: f(), oldLogps: f(), oldValues: f(), advantages: f(), returns: f(), mask: f(), cols: T };
  const lens = [4, 2, 3];
  for (let i = 0; i < N; i++) {
    inp.mask[i] = i % T < lens[Math.floor(i / T)] ? 1 : 0;
    inp.logps[i] = -0.1 - 2 * rnd();
    let lr = -0.5 + rnd(); // log ratio, kept off the kinks at log(0.8), log(1.2)
    for (const k of [Math.log(0.8), Math.log(1.2)]) if (Math.abs(lr - k) < 0.02) lr = k + 0.05;
    inp.oldLogps[i] = inp.logps[i] - lr;
    inp.oldValues[i] = rnd() - 0.5;
    let dv = -0.5 + rnd(); // value change, kept off the clip edges ±0.2
    if (Math.abs(Math.abs(dv) - 0.2) < 0.02) dv += 0.05;
    inp.values[i] = inp.oldValues[i] + dv;
    inp.returns[i] = inp.oldValues[i] + dv * (0.5 + rnd()); // toward v: clipping v then hurts
    inp.advantages[i] = 2 * rnd() - 1;
  }
  return inp;
}

describe('ppoLoss', () => {
  it('clipped policy and value losses (hand values)', () => {
    const c: PpoConfig = { ...PPO_DEFAULTS, cliprange: 0.2, cliprangeValue: 0.2, vfCoef: 0.1 };
    const r = ppoLoss({
      logps: [0.5, 0.5, 0], oldLogps: [0, 0, 0], advantages: [1, -1, 0], values: [1, 0.1, 0], oldValues: [0, 0, 0], returns: [1, 1, 0],
      mask: [1, 1, 0], cols: 3,
    }, c);
    const e = Math.exp(0.5);
    // token 0: max(−e, −1.2) = −1.2 (clipped); token 1: max(e, 1.2) = e
    expect(r.pgLoss).toBeCloseTo((-1.2 + e) / 2, 14);
    // value: token 0: v=1 clipped to 0.2: max(0, 0.64) = 0.64; token 1: v=0.1 inside: 0.81
    expect(r.vfLoss).toBeCloseTo(0.5 * (0.64 + 0.81) / 2, 14);
    expect(r.loss).toBeCloseTo(r.pgLoss + 0.1 * r.vfLoss, 14);
    expect(Array.from(r.dlogps).map((x) => +x.toFixed(12))).toEqual([0, +(e / 2).toFixed(12), 0]);
    expect(Array.from(r.dvalues).map((x) => +x.toFixed(12))).toEqual([0, +(0.1 * 0.5 * 2 * (0.1 - 1) / 2).toFixed(12), 0]);
    expect(r.metrics['policy/clipfrac_avg']).toBe(0.5);
    expect(r.metrics['val/clipfrac_avg']).toBe(0.5);
    expect(r.metrics['policy/approxkl_avg']).toBeCloseTo(0.5 * 0.5 / 3, 14);
    expect(r.metrics['val/ratio']).toBeCloseTo((2 * e + 1) / 3, 14);
    expect(r.metrics['loss/policy_avg']).toBe(r.pgLoss);
    expect(r.metrics['loss/value_avg']).toBe(r.vfLoss);
  });
  it('dlogps and dvalues match finite differences', () => {
    const inp = lossInput();
    const r = ppoLoss(inp, PPO_DEFAULTS);
    for (const key of ['logps', 'values'] as const) {
      const g = key === 'logps' ? r.dlogps : r.dvalues;
      for (let i = 0; i < inp.logps.length; i++) {
        const h = 1e-6, p = Float64Array.from(inp[key]), m = Float64Array.from(inp[key]);
        p[i] += h; m[i] -= h;
        const fd = (ppoLoss({ ...inp, [key]: p }, PPO_DEFAULTS).loss - ppoLoss({ ...inp, [key]: m }, PPO_DEFAULTS).loss) / (2 * h);
        expect(Math.abs(fd - g[i])).toBeLessThan(1e-8);
      }
    }
    expect(r.metrics['policy/clipfrac_avg']).toBeGreaterThan(0);
    expect(r.metrics['val/clipfrac_avg']).toBeGreaterThan(0);
  });
});

describe('PPO epochs × mini-batches × accumulation (trl loop)', () => {
  it('schedule: a fresh order per epoch, cut into mini-batches, then micro-batches', () => {
    const perm = (n: number, e: number) => (e % 2 ? [...Array(n).keys()].reverse() : [...Array(n).keys()]);
    expect(ppoSchedule(4, { numPpoEpochs: 2, numMiniBatches: 2, gradAccumSteps: 1 }, perm)).toEqual([[[[0, 1]], [[2, 3]]], [[[3, 2]], [[1, 0]]]]);
    expect(ppoSchedule(4, { numPpoEpochs: 1, numMiniBatches: 1, gradAccumSteps: 2 }, perm)).toEqual([[[[0, 1], [2, 3]]]]);
    expect(() => ppoSchedule(6, { numPpoEpochs: 1, numMiniBatches: 4, gradAccumSteps: 1 }, perm)).toThrow(/does not split into 4 mini-batches/);
    expect(() => ppoSchedule(2, { numPpoEpochs: 0, numMiniBatches: 1, gradAccumSteps: 1 }, perm)).toThrow(/≥ 1/);
  });

  it('one optimizer step per mini-batch, micro-batches told the accumulation count', async () => {
    const sched = ppoSchedule(8, { numPpoEpochs: 3, numMiniBatches: 2, gradAccumSteps: 2 }, (n) => [...Array(n).keys()]);
    const calls: string[] = [];
    const m = await ppoEpochs(sched, (rows, accum) => { calls.push(`micro ${rows.join(',')} /${accum}`); return { x: calls.length }; }, () => { calls.push('step'); });
    expect(calls.slice(0, 6)).toEqual(['micro 0,1 /2', 'micro 2,3 /2', 'step', 'micro 4,5 /2', 'micro 6,7 /2', 'step']);
    expect(calls.filter((c) => c === 'step').length).toBe(6); // 3 epochs × 2 mini-batches
    // mean over the 12 micro-batches of the value each returned (1, 2, 4, 5, 7, 8, ... : call indices)
    const xs = calls.map((c, i) => (c === 'step' ? 0 : i + 1)).filter(Boolean);
    expect(m.x).toBeCloseTo(xs.reduce((a, b) => a + b, 0) / 12, 12);
  });

  it('two epochs on free log-probs with SGD lr 1: the second epoch is clipped (hand values)', async () => {
    // One row of two tokens, A = [1, −1], old logps 0, values on their returns (value loss 0). Epoch 1:
    // ratio 1, pg = mean(−1, 1) = 0, dlogps = −A/2 = [−½, ½] → logps [½, −½]. Epoch 2: ratio [e^½, e^−½]
    // = [1.65, 0.61] is outside [0.8, 1.2] on the side that the advantage pushes: both tokens clipped,
    // pg = mean(−1.2, 0.8) = −0.2, no gradient; approxkl = ½·mean(¼, ¼) = 0.125.
    const cfg: PpoConfig = { ...PPO_DEFAULTS, cliprange: 0.2 };
    const logps = [0, 0];
    const base = { values: [0, 0], oldLogps: [0, 0], oldValues: [0, 0], advantages: [1, -1], returns: [0, 0], mask: [1, 1], cols: 2 };
    let grad = [0, 0];
    const sched = ppoSchedule(1, { numPpoEpochs: 2, numMiniBatches: 1, gradAccumSteps: 1 }, () => [0]);
    const m = await ppoEpochs(sched, () => {
      const r = ppoLoss({ ...base, logps }, cfg);
      grad = Array.from(r.dlogps);
      return { loss: r.loss, ...r.metrics };
    }, () => { logps.forEach((_, i) => (logps[i] -= grad[i])); });
    expect(logps).toEqual([0.5, -0.5]); // the clipped second epoch did not move them
    expect(m['policy/clipfrac_avg']).toBe(0.5); // (0 + 1) / 2
    expect(m['policy/approxkl_avg']).toBeCloseTo(0.0625, 15); // (0 + 0.125) / 2
    expect(m['loss/policy_avg']).toBeCloseTo(-0.1, 15); // (0 − 0.2) / 2
    expect(m['loss/value_avg']).toBe(0);
    expect(m['val/ratio']).toBeCloseTo((1 + Math.cosh(0.5)) / 2, 15);
    expect(m['val/ratio_var']).toBeCloseTo((Math.cosh(0.5) - 1) ** 2 / 2, 15);
  });
});
