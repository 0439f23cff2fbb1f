// Engine.estimate against a stored dataset with an eval split: the examples it counts are the ones a
// run trains on (the held-out split, made as training makes it, left out), the held-out ones are
// counted apart, and the steps of an epoch-based run follow the training examples only. No GPU
// needed (the time estimate is skipped without one).
import { describe, expect, it } from 'vitest';
import { MemoryKV } from '../train/checkpoint.ts';
import { loadDefaultTokenizer } from '../data/tokenizer.ts';
import { syntheticGrounding } from '../data/synthetic.ts';
import { taskRecords } from '../data/formats/records.ts';
import { newDataset, type DatasetMeta, type ImageRecord } from '../data/formats/types.ts';
import { DEFAULT_CONFIG, type TrainConfig } from '../config/config.ts';
import { splitByImage } from '../session/split.ts';
import { Engine } from './engine.ts';

// 4 images, one question each; image 2 has a second question (5 examples)
const ds: DatasetMeta = { ...newDataset('shapes'), id: 'ds-e' };
const stored = syntheticGrounding({ count: 4, seed: 3 }).map((s, i) => {
  const boxes = [{ id: `b${i}`, x1: s.box[0], y1: s.box[1], x2: s.box[2], y2: s.box[3], label: s.label, question: s.question }];
  if (i === 2) boxes.push({ id: 'b2b', x1: 1, y1: 2, x2: 20, y2: 21, label: 'corner', question: 'Where is the corner?' });
  const image: ImageRecord = {
    id: `img${i}`, datasetId: ds.id, name: `s${i}.png`, type: 'image/png', width: s.image.width, height: s.image.height,
    origWidth: s.image.width, origHeight: s.image.height, scale: 1, bytes: 1, order: i, addedAt: 0,
    labels: { boxes, question: '', answer: '', chosen: '', rejected: '' },
  };
  return { imageId: image.id, name: image.name, blob: new Blob([]), image, records: taskRecords(ds, image) };
});
const engine = new Engine({
  kv: async () => new MemoryKV(),
  decodeImage: async () => {
    throw new Error('the estimate decodes no image');
  },
  loadSamples: async () => ({ dataset: ds, samples: stored }),
  lock: async () => () => {},
  defaultTokenizer: loadDefaultTokenizer,
});

const config = (over: (c: TrainConfig) => void): TrainConfig => {
  const c = structuredClone(DEFAULT_CONFIG);
  c.optim = { ...c.optim, maxSteps: 0, numEpochs: 2, batchSize: 1, gradAccumSteps: 1, warmupSteps: 0, seed: 5 };
  over(c);
  return c;
};

describe('engine estimate with an eval split', () => {
  it('counts the examples trained on, and the held-out ones apart', async () => {
    const none = await engine.estimate(config(() => {}), ds.id);
    expect(none).toMatchObject({ examples: 5, totalSteps: 10, datasetImages: 4 });
    expect(none.evalExamples).toBeUndefined();

    for (const evalSplit of [1, 2, 0.5]) {
      const c = config((c) => (c.eval.evalSplit = evalSplit));
      const e = await engine.estimate(c, ds.id);
      // the split training makes: by image name, the eval section and the seed
      const sources = stored.flatMap((s) => s.records.map((record) => ({ where: s.name, record, images: [{ name: s.name }] })));
      const want = splitByImage(sources, c.eval, c.optim.seed);
      expect(want.eval.length).toBeGreaterThan(0);
      expect(e, `eval split ${evalSplit}`).toMatchObject({ examples: want.train.length, evalExamples: want.eval.length, evalImages: want.evalImages.length, datasetImages: 4 });
      expect(e.examples! + e.evalExamples!).toBe(5);
      expect(e.totalSteps).toBe(2 * want.train.length); // 2 epochs of the training examples, batch 1
      expect(e.notes).toEqual([]);
    }
  });

  it('says so when the split holds out every image', async () => {
    const e = await engine.estimate(config((c) => (c.eval.evalSplit = 4)), ds.id);
    expect(e.examples).toBe(5);
    expect(e.evalExamples).toBeUndefined();
    expect(e.notes.join('\n')).toMatch(/eval\.evalSplit: An eval split of 4 holds out 4 of the dataset's 4 images, leaving none to train on/);
  });
});
