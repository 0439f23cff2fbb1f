// Predictions: run an adapter (and the base model) on chosen images of a dataset, keep the answers
// with their boxes in original pixels and the IoU against the labelled boxes. Kept in a store so
// switching screens does not lose them.
import { create } from 'zustand';
import { iou, type Box as XYXY } from '../data/bbox.ts';
import { boxQuestion, type DatasetMeta, type ImageRecord } from '../data/formats/types.ts';
import { imageBlobs } from './dataset.ts';
import { useRuns } from './runs.ts';
import { trainer } from './runtime.ts';
import { modelSpec } from './training.ts';
import type { TrainConfig } from './runConfig.ts';
import type { GenerateResult } from '../worker/api.ts';

export interface Prediction {
  imageId: string;
  name: string;
  question: string;
  /** labelled boxes of that question, original pixels */
  labelled: XYXY[];
  /** original size */
  width: number;
  height: number;
  adapter?: GenerateResult & { iou: number | null };
  base?: GenerateResult & { iou: number | null };
  error?: string;
}

interface PredictionState {
  running: boolean;
  done: number;
  total: number;
  /** which adapter answered ("run-… step N", "imported: …", "base model") */
  adapterLabel: string;
  results: Prediction[];
  error?: string;
}

export const usePredictions = create<PredictionState>(() => ({ running: false, done: 0, total: 0, adapterLabel: '', results: [] }));
const set = usePredictions.setState;

/**
 * Mean IoU of the labelled boxes, each matched to a distinct predicted box (greedy, best pairs first;
 * an unmatched labelled box scores 0). null when nothing is labelled.
 */
export function matchedIou(labelled: XYXY[], predicted: XYXY[]): number | null {
  if (!labelled.length) return null;
  const pairs: [number, number, number][] = [];
  labelled.forEach((g, i) => predicted.forEach((p, j) => pairs.push([iou(p, g), i, j])));
  pairs.sort((a, b) => b[0] - a[0]);
  const usedG = new Set<number>(), usedP = new Set<number>();
  let sum = 0;
  for (const [v, i, j] of pairs) {
    if (usedG.has(i) || usedP.has(j)) continue;
    usedG.add(i);
    usedP.add(j);
    sum += v;
  }
  return sum / labelled.length;
}

export function meanIou(results: Prediction[], which: 'adapter' | 'base'): number | null {
  const v = results.map((r) => r[which]?.iou).filter((x): x is number => typeof x === 'number');
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
}

/** The question asked of an image: its first box's question, else the image's question. */
export function questionOf(img: ImageRecord): { question: string; boxes: XYXY[] } {
  const b = img.labels.boxes;
  if (b.length) {
    const q = boxQuestion(b[0]);
    return { question: q, boxes: b.filter((x) => boxQuestion(x) === q).map((x) => [x.x1 * img.scale, x.y1 * img.scale, x.x2 * img.scale, x.y2 * img.scale]) };
  }
  return { question: img.labels.question.trim() || 'Describe this image.', boxes: [] };
}

export async function runPredictions(o: { runId: string | 'current' | ''; compare: boolean; maxNewTokens: number; dataset: DatasetMeta; images: ImageRecord[]; config: TrainConfig }): Promise<void> {
  const api = trainer();
  if (!api || usePredictions.getState().running) return;
  set({ running: true, done: 0, total: o.images.length, results: [], error: undefined, adapterLabel: '' });
  try {
    let label = 'base model';
    const withAdapter = o.runId !== '';
    if (withAdapter) {
      const a = await api.useAdapter(o.runId === 'current' ? { kind: 'current' } : { kind: 'run', runId: o.runId });
      const name = a.runId ? (useRuns.getState().runs.find((r) => r.id === a.runId)?.name ?? a.label) : a.label;
      label = a.step !== undefined ? `${name}, step ${a.step}` : name;
    } else if (!(await api.modelInfo())) {
      await api.loadModel(await modelSpec(o.config), null);
    }
    set({ adapterLabel: label });
    const results: Prediction[] = [];
    for (const img of o.images) {
      const { question, boxes } = questionOf(img);
      const p: Prediction = { imageId: img.id, name: img.name, question, labelled: boxes, width: img.origWidth, height: img.origHeight };
      try {
        const blob = (await imageBlobs(img.id))?.image;
        if (!blob) throw new Error('the image is missing from storage');
        const opts = { maxNewTokens: o.maxNewTokens, minPixels: o.dataset.minPixels, maxPixels: o.dataset.maxPixels, original: [{ width: img.origWidth, height: img.origHeight }] };
        const score = (g: GenerateResult) => ({ ...g, iou: matchedIou(boxes, g.boxes.map((b) => b.bbox)) });
        if (withAdapter) p.adapter = score(await api.generate([blob], question, { ...opts, adapter: true }));
        if (o.compare || !withAdapter) p.base = score(await api.generate([blob], question, { ...opts, adapter: false }));
      } catch (e) {
        p.error = (e as Error).message;
      }
      results.push(p);
      set({ results: [...results], done: results.length });
    }
  } catch (e) {
    set({ error: (e as Error).message });
  } finally {
    set({ running: false });
  }
}
