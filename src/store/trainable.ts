// Does a dataset hold anything the chosen method trains on? Counted from the stored records before a
// run is created, so an empty or wrong-kind dataset disables Train with the reason instead of making a
// run that can only fail. Pure (no IndexedDB, no React): store/training.ts feeds it the records.
import { KIND_NAMES, methodKind, methodTakes, type TaskRecord } from '../data/formats/records.ts';
import type { Method } from './runConfig.ts';


export interface Trainable {
  images: number;
  /** records of each kind in the dataset */
  kinds: Partial<Record<TaskRecord['kind'], number>>;
  /** records the method trains on */
  examples: number;
  /** images with at least one record the method trains on (what an eval split divides, by image) */
  exampleImages: number;
}

/** The dataset's records counted against the method. */
export function countTrainable(perImage: readonly (readonly TaskRecord[])[], method: Method): Trainable {
  const kinds: Trainable['kinds'] = {};
  let examples = 0, exampleImages = 0;
  for (const recs of perImage) {
    const before = examples;
    for (const r of recs) {
      kinds[r.kind] = (kinds[r.kind] ?? 0) + 1;
      if (methodTakes(r.kind, method)) examples++;
    }
    if (examples > before) exampleImages++;
  }
  return { images: perImage.length, kinds, examples, exampleImages };
}

/** Why Train is disabled for this dataset, or undefined when it has something to train on. */
export function untrainableReason(name: string, t: Trainable, method: Method): string | undefined {
  if (t.examples > 0) return undefined;
  if (t.images === 0) return `dataset "${name}" is empty: add images on the Dataset screen first`;
  const have = Object.entries(t.kinds).map(([k, c]) => `${c} ${KIND_NAMES[k as TaskRecord['kind']]} record${c! > 1 ? 's' : ''}`);
  if (!have.length) return `dataset "${name}" has ${t.images} image${t.images > 1 ? 's' : ''} but none labelled: label at least one on the Dataset screen`;
  const wants = KIND_NAMES[methodKind(method)];
  return `dataset "${name}" has ${have.join(', ')}, but ${method.toUpperCase()} trains on ${wants} records: pick the matching method or dataset`;
}
