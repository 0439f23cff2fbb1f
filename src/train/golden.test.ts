// The training-loss golden cases (shared/golden/README.md §10) at the level this area owns: the EXPECTED
// per-token log-probs of each case are fed to the loss functions, which must reproduce the expected
// losses, rewards, advantages and per-token tensors within TOL.train. (The model-level run — logps and
// LoRA gradients from the tiny model — belongs to src/parity/train.ts.)
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { check, GoldenCase, TOL, type Check } from '../parity/golden.ts';
import { dpoLoss, type DpoLossType } from './dpo.ts';
import { grpoAdvantages, grpoLoss, type ScaleRewards } from './grpo.ts';
import { sftLoss, sftTargets } from './sft.ts';

const root = resolve(process.env.GOLDEN_DIR ?? '../shared/golden');
const file = (name: string) => join(root, 'cases', `${name}.safetensors`);
const has = (name: string) => existsSync(file(name));
const load = (name: string) => new GoldenCase(file(name), root);

/** Largest err/tol seen, printed for the report. */
const worst: Record<string, number> = {};
function expectPass(caseName: string, checks: Check[]) {
  for (const c of checks) worst[`${caseName}:${c.name}`] = c.err;
  expect(checks.filter((c) => !c.pass).map((c) => `${c.name}: err ${c.err} > tol ${c.tol}`)).toEqual([]);
}

describe.skipIf(!has('lora_sft__one_image'))('golden lora_sft__one_image (loss from per-token NLL)', () => {
  it('mean NLL over the kept tokens', () => {
    const c = load('lora_sft__one_image');
    const { mask } = sftTargets(c.i32('input.labels'));
    const nll = c.f32('expect.per_token_nll');
    expect(mask.length).toBe(nll.length);
    const r = sftLoss({ logps: nll.map((x) => -x), mask });
    expect(r.numKept).toBe(c.num('num_loss_tokens'));
    expectPass('sft', [check('loss', [r.loss], c.f32('expect.loss'), TOL.train)]);
  });
});

describe.skipIf(!has('dpo__one_pair'))('golden dpo__one_pair', () => {
  it('loss, rewards and sequence logps from the expected token logps', () => {
    const c = load('dpo__one_pair');
    const r = dpoLoss({
      policyChosen: [c.f32('expect.policy_chosen_token_logps')],
      policyRejected: [c.f32('expect.policy_rejected_token_logps')],
      refChosen: [c.f32('expect.ref_chosen_token_logps')],
      refRejected: [c.f32('expect.ref_rejected_token_logps')],
    }, { beta: c.num('beta'), lossType: c.meta.loss_type as DpoLossType, labelSmoothing: c.num('label_smoothing') });
    const refSum = (n: string) => [c.f32(n).reduce((s, x) => s + x, 0)];
    expectPass('dpo', [
      check('loss', [r.loss], c.f32('expect.loss'), TOL.train),
      check('chosen_rewards', r.chosenRewards, c.f32('expect.chosen_rewards'), TOL.train),
      check('rejected_rewards', r.rejectedRewards, c.f32('expect.rejected_rewards'), TOL.train),
      check('policy_chosen_logps', r.chosenLogps, c.f32('expect.policy_chosen_logps'), TOL.train),
      check('policy_rejected_logps', r.rejectedLogps, c.f32('expect.policy_rejected_logps'), TOL.train),
      check('ref_chosen_logps', refSum('expect.ref_chosen_token_logps'), c.f32('expect.ref_chosen_logps'), TOL.train),
      check('ref_rejected_logps', refSum('expect.ref_rejected_token_logps'), c.f32('expect.ref_rejected_logps'), TOL.train),
    ]);
  });
});

for (const name of ['grpo__on_policy', 'grpo__off_policy']) {
  describe.skipIf(!has(name))(`golden ${name}`, () => {
    it('advantages, per-token KL and loss, and the three loss reductions', () => {
      const c = load(name);
      const [G, T] = c.shape('input.completion_mask');
      expect(G).toBe(c.num('num_generations'));
      const mask = c.i32('input.completion_mask');
      const adv = grpoAdvantages(c.f32('input.rewards'), c.num('num_generations'), { scaleRewards: (c.meta.scale_rewards ?? 'group') as ScaleRewards });
      const onPolicy = c.meta.old_logps === 'current_detached';
      if (!onPolicy) expect(c.meta.old_logps).toBe('given');
      const base = {
        logps: c.f32('expect.per_token_logps'),
        refLogps: c.f32('expect.ref_per_token_logps'),
        oldLogps: onPolicy ? undefined : c.f32('input.old_per_token_logps'),
        mask, advantages: adv.advantages, cols: T,
      };
      const cfg = { beta: c.num('beta'), epsilon: c.num('epsilon'), epsilonHigh: c.num('epsilon_high'), maxCompletionLength: c.num('max_completion_length') };
      const grpo = grpoLoss(base, { ...cfg, lossType: 'grpo' });
      const bnpo = grpoLoss(base, { ...cfg, lossType: 'bnpo' });
      const dr = grpoLoss(base, { ...cfg, lossType: 'dr_grpo' });
      const dapo = grpoLoss(base, { ...cfg, lossType: 'dapo' });
      expectPass(name, [
        check('advantages', adv.advantages, c.f32('expect.advantages'), TOL.train),
        check('per_token_kl', grpo.perTokenKl!, c.f32('expect.per_token_kl'), TOL.train, mask),
        check('per_token_loss', grpo.perTokenLoss, c.f32('expect.per_token_loss'), TOL.train, mask),
        check('loss_grpo', [grpo.loss], c.f32('expect.loss_grpo'), TOL.train),
        check('loss_bnpo', [bnpo.loss], c.f32('expect.loss_bnpo'), TOL.train),
        check('loss_dr_grpo', [dr.loss], c.f32('expect.loss_dr_grpo'), TOL.train),
        // one process, one step: dapo's normalisation equals bnpo's (README §10)
        check('loss_dapo', [dapo.loss], c.f32('expect.loss_bnpo'), TOL.train),
      ]);
      if (onPolicy) expect(grpo.metrics['clip_ratio/region_mean']).toBe(0);
      else expect(grpo.metrics['clip_ratio/region_mean']).toBeGreaterThan(0); // the case puts ratios outside [1−ε, 1+ε]
    });
  });
}

describe('golden report', () => {
  it('max errors', () => {
    if (Object.keys(worst).length) console.log(Object.entries(worst).map(([k, v]) => `${k} ${v.toExponential(2)}`).join('\n'));
  });
});
