// Predictions over a whole split (Engine.predictSplit): the run's eval split (recomputed in the
// worker as training makes it), its train split or the whole dataset, with the adapter and the base
// model side by side. Questions stream in as they are answered; Cancel stops after the current one.
// Kept in a store so switching screens does not lose them, and in IndexedDB so a reload does not
// either (answering a split takes minutes): a prediction cut short by a reload shows what it had,
// marked interrupted. Deleting the run whose adapter answered deletes them.
import { create } from 'zustand';
import { persist } from 'zustand/middleware';
import { flushStores, idbStorage } from './runPersist.ts';
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
  /** the run whose adapter answered (undefined: the base model or an imported adapter) */
  runId?: string;
  /** the prediction ran to its end or was cancelled (false while it runs: loaded so after a reload, it was cut short) */
  complete: boolean;
}

type Store = SplitPredictionState & { over: 'images' | SplitChoice };
const initial: SplitPredictionState = { running: false, cancelling: false, done: 0, total: 0, adapterLabel: '', questions: [], cancelled: false, skipped: 0, runId: undefined, complete: true };
type Saved = Pick<Store, 'over' | 'info' | 'adapterLabel' | 'questions' | 'cancelled' | 'skipped' | 'done' | 'total' | 'runId' | 'complete'>;
export const useSplitPredictions = create<Store>()(
  persist<Store, [], [], Saved>((): Store => ({ ...initial, over: 'images' }), {
    name: 'split-predictions',
    version: 1,
    // questions stream in one by one: write at most once a second (and when the tab is hidden)
    storage: idbStorage<Saved>(1000),
    partialize: (s): Saved => ({ over: s.over, info: s.info, adapterLabel: s.adapterLabel, questions: s.questions, cancelled: s.cancelled, skipped: s.skipped, done: s.done, total: s.total, runId: s.runId, complete: s.complete }),
    merge: (persisted, current) => restoreSplitPredictions(persisted as Partial<Saved> | undefined, current),
  }),
);
const set = useSplitPredictions.setState;

/** The saved predictions after a reload: nothing runs any more (one saved while running stays incomplete: interrupted). */
export function restoreSplitPredictions(saved: Partial<Saved> | undefined, current: Store): Store {
  return { ...current, ...saved, running: false, cancelling: false };
}

/** Cut short by a reload or a closed tab: saved while it ran, and nothing runs now. */
export const interrupted = (s: Pick<SplitPredictionState, 'complete' | 'running'>): boolean => !s.complete && !s.running;

// A deleted run takes its predictions with it (the run list only loses an id when it is deleted).
useRuns.subscribe((s, prev) => {
  const id = useSplitPredictions.getState().runId;
  if (id && prev.runs.some((r) => r.id === id) && !s.runs.some((r) => r.id === id)) set({ ...initial, info: undefined, error: undefined });
});

/** The Predictions screen's "Predict over" choice, kept here so leaving the screen (to Train, while they run) and coming back shows the same predictions. */
export const setPredictOver = (over: 'images' | SplitChoice) => set({ over });

export async function runSplitPredictions(o: { runId: string | 'current' | ''; split: SplitChoice; compare: boolean; maxNewTokens: number; datasetId: string; config: TrainConfig }): Promise<void> {
  const api = trainer();
  if (!api || useSplitPredictions.getState().running) return;
  set({ ...initial, running: true, complete: false, info: undefined, error: undefined });
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
    set({ adapterLabel: label, runId });
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
    set({ running: false, cancelling: false, complete: true });
    flushStores(); // the finished result is saved now, not a second later
  }
}

export async function cancelSplitPredictions(): Promise<void> {
  const api = trainer();
  if (!api || !useSplitPredictions.getState().running) return;
  set({ cancelling: true });
  await api.cancelPredictSplit();
}
