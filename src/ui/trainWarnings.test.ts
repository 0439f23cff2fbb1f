import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, type TrainConfig } from '../store/runConfig.ts';
import type { TaskRecord } from '../data/formats/records.ts';
import { byPath, formErrors, plannedSteps, trainWarnings } from './trainWarnings.ts';
import { countTrainable, untrainableReason } from '../store/trainable.ts';

const cfg = (optim: Partial<TrainConfig['optim']>): TrainConfig => ({ ...DEFAULT_CONFIG, optim: { ...DEFAULT_CONFIG.optim, ...optim } });

describe('step-count warnings', () => {
  it('the defaults and the Quick try preset on one example do not warn', () => {
    expect(trainWarnings(DEFAULT_CONFIG, { datasetSize: 80, secondsPerStep: 2.5 })).toEqual({});
    // the defaults (warmup 0) on 8 examples do not warn; 10 warmup steps on 3 epochs × 8 / 4 = 6 steps do
    expect(trainWarnings(DEFAULT_CONFIG, { datasetSize: 8 })).toEqual({});
    expect(trainWarnings(cfg({ maxSteps: 0, numEpochs: 3, batchSize: 1, gradAccumSteps: 4, warmupSteps: 10 }), { datasetSize: 8 })).toEqual({ 'optim.warmupSteps': 'Warmup (10 steps) is half the run (6) or more: the rate barely reaches its peak.' });
    expect(trainWarnings(cfg({ maxSteps: 50, gradAccumSteps: 1, warmupSteps: 5 }), { datasetSize: 1, secondsPerStep: 2.5 })).toEqual({});
  });
  it('more than 100k steps warns on max steps, with or without a dataset', () => {
    const w = trainWarnings(cfg({ maxSteps: 1_000_000 }));
    expect(Object.keys(w)).toEqual(['optim.maxSteps']);
    expect(w['optim.maxSteps']).toMatch(/^1,000,000 steps is far beyond what a LoRA run needs/);
  });
  it('max steps far above epochs × dataset size names the passes', () => {
    const w = trainWarnings(cfg({ maxSteps: 5000, batchSize: 1, gradAccumSteps: 4, numEpochs: 3 }), { datasetSize: 8 });
    expect(w['optim.maxSteps']).toBe('5,000 steps × 4 samples = 2,500 passes over the 8 examples (epochs × dataset size would be 6 steps): the model will only memorise them.');
    expect(trainWarnings(cfg({ maxSteps: 400, gradAccumSteps: 4 }), { datasetSize: 8 })).toEqual({}); // 200 passes: the edge, no warning
  });
  it('absurd epochs warn on epochs; a run of days at the measured step time warns too', () => {
    expect(trainWarnings(cfg({ maxSteps: 0, numEpochs: 1000 }))['optim.numEpochs']).toMatch(/^1,000 epochs is far more than LoRA needs/);
    const w = trainWarnings(cfg({ maxSteps: 0, numEpochs: 10, gradAccumSteps: 1 }), { datasetSize: 20_000, secondsPerStep: 3 });
    expect(w['optim.numEpochs']).toBe('This run takes ≈ 6.9 days at 3.0 s a step (200,000 steps).');
    // both at once on max steps
    const both = trainWarnings(cfg({ maxSteps: 200_000 }), { secondsPerStep: 2 });
    expect(both['optim.maxSteps']).toMatch(/far beyond .* ≈ 4\.6 days at 2\.0 s a step \(200,000 steps\)\.$/);
    // unknown speed: no time warning
    expect(trainWarnings(cfg({ maxSteps: 0, numEpochs: 10 }), { datasetSize: 20_000 })).toEqual({});
  });
  it('warmup of half the run or more warns; a field with an error gets no warning', () => {
    expect(trainWarnings(cfg({ maxSteps: 20, warmupSteps: 10 }))['optim.warmupSteps']).toMatch(/Warmup \(10 steps\) is half the run \(20\)/);
    expect(trainWarnings(cfg({ maxSteps: 1_000_000 }), {}, { 'optim.maxSteps': 'bad' })).toEqual({});
  });
  it('planned steps: max steps, else ceil(epochs × examples / effective batch)', () => {
    expect(plannedSteps(cfg({ maxSteps: 7 }).optim, 100)).toBe(7);
    expect(plannedSteps(cfg({ maxSteps: 0, numEpochs: 3, batchSize: 2, gradAccumSteps: 2 }).optim, 10)).toBe(8);
    expect(plannedSteps(cfg({ maxSteps: 0 }).optim)).toBeUndefined();
  });
});

describe('form errors by field path', () => {
  it('the config validation (config/validate.ts), keyed by path', () => {
    expect(Object.keys(formErrors(cfg({ learningRate: 5, batchSize: 0 }))).sort()).toEqual(['optim.batchSize', 'optim.learningRate']);
    expect(formErrors(DEFAULT_CONFIG)).toEqual({});
    // the same messages the CLI prints for --config
    expect(formErrors(cfg({ learningRate: 1e10 }))['optim.learningRate']).toMatch(/^The learning rate must be a number in \(0, 1\)/);
    // cross-field and dataset rules once the dataset size is known
    expect(formErrors(cfg({ maxSteps: 5, warmupSteps: 5 }))['optim.warmupSteps']).toMatch(/must be shorter than the run \(5 steps\)/);
    expect(formErrors(cfg({ batchSize: 8 }), { datasetSize: 3 })['optim.batchSize']).toMatch(/Batch size 8 is more than the dataset's 3 examples/);
    expect(formErrors(cfg({ batchSize: 8 }))).toEqual({});
  });
  it('byPath accepts a record or a list of { path, message } (string or array paths)', () => {
    expect(byPath({ 'optim.maxSteps': 'x' })).toEqual({ 'optim.maxSteps': 'x' });
    expect(byPath([{ path: 'optim.maxSteps', message: 'a.' }, { path: ['optim', 'maxSteps'], message: 'b.' }, { path: ['lora', 'r'], message: 'c' }])).toEqual({ 'optim.maxSteps': 'a. b.', 'lora.r': 'c' });
  });
});

describe('trainable records', () => {
  const sft: TaskRecord = { kind: 'sft', question: 'q', answer: 'a' };
  const pref: TaskRecord = { kind: 'preference', prompt: 'p', chosen: 'c', rejected: 'r' };
  it('an empty dataset, an unlabelled one and one of the wrong kind each say why', () => {
    expect(untrainableReason('cats', countTrainable([], 'sft'), 'sft')).toBe('dataset "cats" is empty: add images on the Dataset screen first');
    expect(untrainableReason('cats', countTrainable([[], []], 'sft'), 'sft')).toBe('dataset "cats" has 2 images but none labelled: label at least one on the Dataset screen');
    expect(untrainableReason('cats', countTrainable([[sft, sft], [sft]], 'dpo'), 'dpo')).toBe(
      'dataset "cats" has 3 question/answer (SFT) records, but DPO trains on preference-pair (DPO) records: pick the matching method or dataset',
    );
    expect(untrainableReason('cats', countTrainable([[pref]], 'grpo'), 'grpo')).toMatch(/1 preference-pair \(DPO\) record, but GRPO trains on prompt \+ reward/);
  });
  it('counts what the method takes', () => {
    const t = countTrainable([[sft, pref], [], [sft]], 'sft');
    expect(t).toEqual({ images: 3, kinds: { sft: 2, preference: 1 }, examples: 2, exampleImages: 2 });
    expect(untrainableReason('x', t, 'sft')).toBeUndefined();
  });
});

describe('the eval split on the form', () => {
  const withEval = (evalSplit: number, evalSteps = 50): TrainConfig => ({ ...DEFAULT_CONFIG, optim: { ...DEFAULT_CONFIG.optim, maxSteps: 20 }, eval: { ...DEFAULT_CONFIG.eval, evalSplit, evalSteps } });
  it('refuses a split that leaves no image to train on, counted in images (not examples)', () => {
    // 6 questions on 3 images: holding out 3 images leaves none, though 3 < 6 examples
    expect(formErrors(withEval(3), { datasetSize: 6, datasetImages: 3 })['eval.evalSplit']).toBe(
      "An eval split of 3 holds out 3 of the dataset's 3 images, leaving none to train on: hold out at most 2 (a fraction ≤ 0.67).",
    );
    expect(formErrors(withEval(2), { datasetSize: 6, datasetImages: 3 })['eval.evalSplit']).toBeUndefined();
    expect(formErrors(withEval(0.5), { datasetSize: 6, datasetImages: 3 })['eval.evalSplit']).toBeUndefined();
    expect(formErrors(withEval(-1))['eval.evalSplit']).toMatch(/^The eval split is 0 \(none\), a fraction/);
    expect(formErrors(withEval(0.25, -3))['eval.evalSteps']).toMatch(/^Eval steps is a whole number/);
  });
  it('warns when evaluations are further apart than the run is long', () => {
    expect(trainWarnings(withEval(0.25, 50), { datasetSize: 8 })['eval.evalSteps']).toBe('Every 50 steps is longer than the run (20 steps): the held-out split is evaluated at the end only.');
    expect(trainWarnings(withEval(0.25, 10), { datasetSize: 8 })['eval.evalSteps']).toBeUndefined();
    expect(trainWarnings(withEval(0, 50), { datasetSize: 8 })['eval.evalSteps']).toBeUndefined(); // no split: nothing evaluated
  });
});
