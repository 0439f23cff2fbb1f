// The eval split by image: nothing leaks, sizes as asked, seeded; and the config rules around it.
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, evalImageCount, mergeConfig } from '../config/config.ts';
import { validate } from '../config/validate.ts';
import type { ExampleSource } from './examples.ts';
import { imageCount, imageKey, keepHeldOut, splitByImage, splitSide } from './split.ts';

/** `images` images with 1..3 questions each (uneven, so a record-level split would differ). */
function sources(images: number): ExampleSource[] {
  const out: ExampleSource[] = [];
  for (let i = 0; i < images; i++) {
    for (let q = 0; q <= i % 3; q++) out.push({ where: `data.jsonl line ${out.length + 1}`, record: { kind: 'sft', question: `q${q}`, answer: 'a' }, images: [{ name: `img${i}.png` }] });
  }
  return out;
}
const ev = (evalSplit: number) => ({ ...DEFAULT_CONFIG.eval, evalSplit });

describe('splitByImage', () => {
  const src = sources(20);
  it('puts every record of an image on one side and holds out the images asked for', () => {
    for (const [split, want] of [[0.25, 5], [0.1, 2], [3, 3], [0.01, 1]] as const) {
      const s = splitByImage(src, ev(split), 42);
      const tr = new Set(s.train.map(imageKey)), te = new Set(s.eval.map(imageKey));
      expect([...te].filter((k) => tr.has(k))).toEqual([]);
      expect(te.size).toBe(want);
      expect(tr.size).toBe(20 - want);
      expect(s.train.length + s.eval.length).toBe(src.length);
      // all of a held-out image's questions went with it
      for (const k of te) expect(s.eval.filter((x) => imageKey(x) === k).length).toBe(src.filter((x) => imageKey(x) === k).length);
    }
  });
  it('is the same for the same seed and differs for another', () => {
    const a = splitByImage(src, ev(0.25), 42), b = splitByImage(src, ev(0.25), 42), c = splitByImage(src, ev(0.25), 7);
    expect(b.evalImages).toEqual(a.evalImages);
    expect(c.evalImages).not.toEqual(a.evalImages);
  });
  it('splits nothing at 0 and refuses a split that leaves no training image', () => {
    expect(splitByImage(src, ev(0), 1)).toMatchObject({ train: src, eval: [] });
    expect(() => splitByImage(src, ev(20), 1)).toThrow(/leaving none to train on/);
    expect(imageCount(src)).toBe(20);
  });
});

describe('splitSide and keepHeldOut (predictions over a run\'s split, a resumed run)', () => {
  const c = mergeConfig(DEFAULT_CONFIG, { method: 'sft', eval: { evalSplit: 0.25 }, optim: { seed: 42 } });
  it('recomputes the sides training made', () => {
    const src = sources(20), s = splitByImage(src, c.eval, 42);
    expect(splitSide(src, c, 'eval')).toEqual(s.eval);
    expect(splitSide(src, c, 'train')).toEqual(s.train);
    expect(splitSide(src, c, 'all')).toEqual(src);
  });
  it('keeps the images held out at the start when the dataset changed since', () => {
    const before = splitByImage(sources(20), c.eval, 42).evalImages;
    const grown = sources(24), warnings: string[] = [];
    const kept = keepHeldOut(splitByImage(grown, c.eval, 42), grown, before, warnings);
    expect(new Set(kept.eval.map(imageKey))).toEqual(new Set(before));
    expect(kept.train.filter((x) => before.includes(imageKey(x)))).toEqual([]);
    expect(warnings[0]).toMatch(/dataset changed since this run started/);
    expect(new Set(splitSide(grown, c, 'eval', before).map(imageKey))).toEqual(new Set(before));
    // the same dataset: the seeded split as it is, no warning
    const same: string[] = [];
    expect(keepHeldOut(splitByImage(sources(20), c.eval, 42), sources(20), before, same).evalImages).toEqual(before);
    expect(same).toEqual([]);
  });
});

describe('eval config', () => {
  it('counts images from a fraction or a count', () => {
    expect([evalImageCount(ev(0), 12), evalImageCount(ev(0.25), 12), evalImageCount(ev(0.01), 12), evalImageCount(ev(4), 12)]).toEqual([0, 3, 1, 4]);
  });
  it('validates ranges and the split against the dataset', () => {
    const c = (e: Partial<typeof DEFAULT_CONFIG.eval>) => mergeConfig(DEFAULT_CONFIG, { eval: e });
    expect(validate(c({ evalSplit: 0.25 }), { datasetSize: 9, datasetImages: 12 })).toEqual([]);
    const paths = (e: Partial<typeof DEFAULT_CONFIG.eval>, ctx = {}) => validate(c(e), ctx).map((x) => x.path);
    expect(paths({ evalSplit: -0.5 })).toEqual(['eval.evalSplit']);
    expect(paths({ evalSplit: 1.5 })).toEqual(['eval.evalSplit']);
    expect(paths({ evalSteps: -1 })).toEqual(['eval.evalSteps']);
    expect(paths({ evalMaxNewTokens: 0 })).toEqual(['eval.evalMaxNewTokens']);
    expect(paths({ evalSplit: 12 }, { datasetSize: 12 })).toEqual(['eval.evalSplit']);
    expect(validate(c({ evalSplit: 1 }), { datasetImages: 1 })[0].message).toMatch(/holds out 1 of the dataset's 1 images/);
    expect(paths({ evalSplit: 11 }, { datasetSize: 12 })).toEqual([]);
  });
});
