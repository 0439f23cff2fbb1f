// The held-out evaluation split, by image: every record about one image lands on the same side, so
// no question about an eval image is ever trained on (several questions per image are common in
// grounding data, and splitting by record would leak the image). Seeded: the same sources, split
// and seed give the same split on any engine (base/rng.ts).
import { Rng } from '../base/rng.ts';
import { evalImageCount, type TrainConfig } from '../config/config.ts';
import { takesRecord, type ExampleSource } from './examples.ts';

/** An image's identity: its name (the dataset's image id or the file path the parser resolved), all of a record's images together. */
export function imageKey(s: ExampleSource): string {
  return s.images.map((i) => i.name).join('\n');
}

/** Distinct images (image keys) among `sources`. */
export function imageCount(sources: ExampleSource[]): number {
  return new Set(sources.map(imageKey)).size;
}

export interface Split {
  train: ExampleSource[];
  eval: ExampleSource[];
  /** the held-out image keys */
  evalImages: string[];
}

/**
 * Hold out evalImageCount(e, images) images, drawn by a seeded permutation of the distinct images
 * (in order of first appearance), with all their records; sources keep their order on both sides.
 */
export function splitByImage(sources: ExampleSource[], e: TrainConfig['eval'], seed: number): Split {
  const keys = [...new Set(sources.map(imageKey))];
  const k = evalImageCount(e, keys.length);
  if (k === 0) return { train: sources, eval: [], evalImages: [] };
  if (k >= keys.length) throw new Error(`An eval split of ${e.evalSplit} holds out ${k} of ${keys.length} images, leaving none to train on.`);
  // its own stream, so the split never depends on (or shifts) the data order or LoRA init
  const held = new Set(new Rng((Math.imul(seed >>> 0, 0x2545f491) ^ 0x5e1f) >>> 0).permutation(keys.length).slice(0, k).map((i) => keys[i]));
  return { train: sources.filter((s) => !held.has(imageKey(s))), eval: sources.filter((s) => held.has(imageKey(s))), evalImages: keys.filter((x) => held.has(x)) };
}

/** Which records the studio's predictions over a split take: the held-out images, the trained ones, or all. */
export type SplitSide = 'eval' | 'train' | 'all';

/**
 * One side of a run's split, recomputed as training computes it (the CLI and the engine alike): the
 * records the method takes, split by image with the config's eval section and seed, the images the
 * run held out at its start (`heldBefore`) kept held out. With no eval split the train side is every
 * taken record and the eval side is empty.
 */
export function splitSide(sources: ExampleSource[], c: Pick<TrainConfig, 'method' | 'eval' | 'optim'>, side: SplitSide, heldBefore?: string[]): ExampleSource[] {
  const taken = sources.filter((s) => takesRecord(s.record, c.method));
  if (side === 'all') return taken;
  const s = keepHeldOut(splitByImage(taken, c.eval, c.optim.seed), taken, heldBefore);
  return side === 'eval' ? s.eval : s.train;
}

/**
 * A resumed run keeps the images it held out at its start. The split is seeded, so with the same
 * dataset it is the same; when the dataset changed since (images added or removed), the images held
 * out then that are still there stay held out (new ones train) and a warning says so.
 */
export function keepHeldOut(split: Split, taken: ExampleSource[], before: string[] | undefined, warnings: string[] = []): Split {
  if (!before?.length || !split.eval.length) return split;
  const now = new Set(split.evalImages);
  if (before.length === now.size && before.every((k) => now.has(k))) return split;
  const held = new Set(before);
  const ev = taken.filter((s) => held.has(imageKey(s)));
  if (!ev.length || ev.length === taken.length) return split; // none of them left (or nothing else): a fresh split
  const kept = [...new Set(ev.map(imageKey))];
  warnings.push(`The dataset changed since this run started: it keeps the ${kept.length} held-out image${kept.length > 1 ? 's' : ''} it started with${kept.length < before.length ? ` (${before.length - kept.length} of them are gone)` : ''}, so nothing it trained on is evaluated.`);
  return { train: taken.filter((s) => !held.has(imageKey(s))), eval: ev, evalImages: kept };
}
