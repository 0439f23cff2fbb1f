// Predictions over a whole split (Engine.predictSplit): the run's eval split (recomputed in the
// worker as training makes it), its train split or the whole dataset, with the adapter and the base
// model side by side. Questions stream in as they are answered; Cancel stops after the current one.
// Kept in a store so switching screens does not lose them.
import { create } from 'zustand';
import type { PredictSplitEvent, PredictSplitRequest, SplitQuestion } from '../worker/api.ts';
import { callback } from '../worker/client.ts';
import { useRuns } from './runs.ts';
import { trainer } from './runtime.ts';
import { modelSpec } from './training.ts';
import type { TrainConfig } from './runConfig.ts';

export type SplitChoice = PredictSplitRequest['split'];

interface SplitPredictionState {
  running: boolean;
  cancelling: boolean;
  done: number;
  total: number;
  /** what the worker is predicting over (its start event) */
  info?: Extract<PredictSplitEvent, { type: 'start' }>;
  /** which adapter answered ("SFT #1, step 8", "imported: …"); '' = the base model only */
  adapterLabel: string;
  questions: SplitQuestion[];
  cancelled: boolean;
  /** records of the split that are not grounding questions or fail the checks */
  skipped: number;
  error?: string;
}

const initial = { running: false, cancelling: false, done: 0, total: 0, adapterLabel: '', questions: [], cancelled: false, skipped: 0 };
export const useSplitPredictions = create<SplitPredictionState & { over: 'images' | SplitChoice }>(() => ({ ...initial, over: 'images' }));
const set = useSplitPredictions.setState;

/** The Predictions screen's "Predict over" choice, kept here so leaving the screen (to Train, while they run) and coming back shows the same predictions. */
export const setPredictOver = (over: 'images' | SplitChoice) => set({ over });

export async function runSplitPredictions(o: { runId: string | 'current' | ''; split: SplitChoice; compare: boolean; maxNewTokens: number; datasetId: string; config: TrainConfig }): Promise<void> {
  const api = trainer();
  if (!api || useSplitPredictions.getState().running) return;
  set({ ...initial, running: true, info: undefined, error: undefined });
  try {
    const withAdapter = o.runId !== '';
    let runId: string | undefined;
    let label = '';
    if (withAdapter) {
      const a = await api.useAdapter(o.runId === 'current' ? { kind: 'current' } : { kind: 'run', runId: o.runId });
      runId = a.runId;
      const name = a.runId ? (useRuns.getState().runs.find((r) => r.id === a.runId)?.name ?? a.label) : a.label;
      label = a.step !== undefined ? `${name}, step ${a.step}` : name;
    } else if (!(await api.modelInfo())) {
      await api.loadModel(await modelSpec(o.config), null);
    }
    set({ adapterLabel: label });
    const questions: SplitQuestion[] = [];
    const r = await api.predictSplit(
      { datasetId: o.datasetId, runId, config: o.config, split: o.split, adapter: withAdapter, base: o.compare || !withAdapter, maxNewTokens: o.maxNewTokens },
      callback((e: PredictSplitEvent) => {
        if (e.type === 'start') set({ info: e, total: e.total });
        else {
          questions.push(e.question);
          set({ questions: [...questions], done: e.done, total: e.total });
        }
      }),
    );
    set({ questions: r.questions, cancelled: r.cancelled, skipped: r.skipped, done: r.questions.length });
  } catch (e) {
    set({ error: (e as Error).message });
  } finally {
    set({ running: false, cancelling: false });
  }
}

export async function cancelSplitPredictions(): Promise<void> {
  const api = trainer();
  if (!api || !useSplitPredictions.getState().running) return;
  set({ cancelling: true });
  await api.cancelPredictSplit();
}
