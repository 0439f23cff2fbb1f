// Predictions: run an adapter (and the base model) on chosen images of a dataset, keep the answers
// with their boxes in original pixels and the IoU against the labelled boxes. Every question of an
// image is asked and scored (boxes grouped by their question, as training groups them); an answer
// that holds no parseable box is flagged, not scored silently as 0. Kept in a store so switching
// screens does not lose them.
import { create } from 'zustand';
import type { Box as XYXY } from '../data/bbox.ts';
import type { DatasetMeta, ImageRecord } from '../data/formats/types.ts';
import { questionsOf, scoreAnswer, type Scored } from './predictionScore.ts';
import { imageBlobs } from './dataset.ts';
import { useRuns } from './runs.ts';
import { trainer } from './runtime.ts';
import { modelSpec } from './training.ts';
import type { TrainConfig } from './runConfig.ts';

export interface Prediction {
  imageId: string;
  name: string;
  question: string;
  /** which of the image's questions (0-based) and how many it has */
  questionIndex: number;
  questionCount: number;
  /** labelled boxes of that question, original pixels */
  labelled: XYXY[];
  /** original size */
  width: number;
  height: number;
  adapter?: Scored;
  base?: Scored;
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

export { matchedIou, meanIou, questionsOf, scoreAnswer, type Scored } from './predictionScore.ts';

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
    let done = 0;
    for (const img of o.images) {
      const qs = questionsOf(img);
      const blob = (await imageBlobs(img.id).catch(() => undefined))?.image;
      for (const [qi, { question, boxes }] of qs.entries()) {
        const p: Prediction = { imageId: img.id, name: img.name, question, questionIndex: qi, questionCount: qs.length, labelled: boxes, width: img.origWidth, height: img.origHeight };
        try {
          if (!blob) throw new Error('the image is missing from storage');
          const opts = { maxNewTokens: o.maxNewTokens, minPixels: o.dataset.minPixels, maxPixels: o.dataset.maxPixels, original: [{ width: img.origWidth, height: img.origHeight }] };
          if (withAdapter) p.adapter = scoreAnswer(boxes, await api.generate([blob], question, { ...opts, adapter: true }));
          if (o.compare || !withAdapter) p.base = scoreAnswer(boxes, await api.generate([blob], question, { ...opts, adapter: false }));
        } catch (e) {
          p.error = (e as Error).message;
        }
        results.push(p);
        set({ results: [...results] });
      }
      set({ done: ++done });
    }
  } catch (e) {
    set({ error: (e as Error).message });
  } finally {
    set({ running: false });
  }
}
