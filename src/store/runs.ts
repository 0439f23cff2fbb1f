// Run history: every training run with its settings and metric series, persisted in IndexedDB so
// charts come back after a reload. The engine's progress callback (store/training.ts) records one
// row of metrics per optimizer step through `recordStep`: the row is committed to its own
// append-only store (runPersist.ts, patchwork-metrics) before the step is drawn, so a closed or
// crashed tab loses no step the charts showed and a resumed run's chart has no gap. The held-out
// evaluations go the same way through `recordEval`, into their own store (patchwork-evals), and join
// the run's series under their eval_ names (eval_loss, ...). The run records themselves (settings,
// status, checkpoint step) are written throttled to 'patchwork-runs'. The checkpoints live in the
// worker's IndexedDB store (patchwork-checkpoints), keyed by the run id.
import { create } from 'zustand';
import { persist } from 'zustand/middleware';
import { deleteSteps, evalDb, flushStores, idbStorage, loadAllSteps, onPersistError, putStep, putSteps, rowsOf, seriesOf, type StepRow } from './runPersist.ts';
import type { PersistStorage } from 'zustand/middleware';
import type { Method, TrainConfig } from './runConfig.ts';

export type RunStatus = 'running' | 'paused' | 'stopped' | 'done' | 'failed';

/** metric name → parallel arrays of step and value */
export type { Series } from './runPersist.ts';
import type { Series } from './runPersist.ts';

export interface RunRecord {
  id: string;
  name: string;
  createdAt: number;
  method: Method;
  /** model id shown in the history ("tiny", hub id or folder name) */
  model: string;
  config: TrainConfig;
  /** the dataset it trains on */
  datasetId?: string;
  status: RunStatus;
  error?: string;
  /** step of its last checkpoint (what Resume continues from); null or absent: none yet */
  checkpointStep?: number | null;
  /** the dataset images it holds out for evaluation (ids; absent: no eval split) */
  evalImageIds?: string[];
  /** the step series (trl names) and, under their eval_ names, the held-out evaluations' */
  metrics: Record<string, Series>;
  /** drawn on the charts */
  visible: boolean;
  color: string;
}

// Distinct, colour-blind-safe-ish hues (Tableau 10) for overlaid runs.
export const RUN_COLORS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

interface RunsStore {
  runs: RunRecord[];
  /** create a run record (status running) and return its id */
  addRun(r: { name?: string; method: Method; model: string; config: TrainConfig; datasetId?: string }): string;
  /** one optimizer step's metrics (loss, lr, grad_norm, tokens_per_s, ...), in memory only */
  appendMetrics(id: string, step: number, values: Record<string, number>): void;
  /** persist a step's metrics, then append them (resolves once both are done) */
  recordStep(id: string, step: number, values: Record<string, number>): Promise<void>;
  /** persist an evaluation's metrics (eval_ names) after `step`, then append them */
  recordEval(id: string, step: number, values: Record<string, number>): Promise<void>;
  /** drop points after `step` (a run resumed from its checkpoint at `step` redoes them) */
  truncateMetrics(id: string, step: number): void;
  setStatus(id: string, status: RunStatus, error?: string): void;
  setCheckpoint(id: string, step: number | null): void;
  setEvalImages(id: string, imageIds: string[]): void;
  rename(id: string, name: string): void;
  toggleVisible(id: string): void;
  remove(id: string): void;
}

function newId(): string {
  return `run-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
}

export const useRuns = create<RunsStore>()(
  persist(
    (set, get) => ({
      runs: [],
      addRun({ name, method, model, config, datasetId }) {
        const id = newId();
        const n = get().runs.length;
        const run: RunRecord = {
          id,
          name: name ?? `${method.toUpperCase()} #${n + 1}`,
          createdAt: Date.now(),
          method,
          model,
          config,
          ...(datasetId ? { datasetId } : {}),
          status: 'running',
          metrics: {},
          visible: true,
          color: RUN_COLORS[n % RUN_COLORS.length],
        };
        set((s) => ({ runs: [...s.runs, run] }));
        return id;
      },
      appendMetrics(id, step, values) {
        set((s) => ({
          runs: s.runs.map((r) => {
            if (r.id !== id) return r;
            const metrics = { ...r.metrics };
            for (const [k, v] of Object.entries(values)) {
              const old = metrics[k] ?? { step: [], value: [] };
              metrics[k] = { step: [...old.step, step], value: [...old.value, v] };
            }
            return { ...r, metrics };
          }),
        }));
      },
      async recordStep(id, step, values) {
        try {
          await putStep({ runId: id, step, values });
        } catch (e) {
          onPersistError(`Could not save the metrics of step ${step}: ${(e as Error)?.message ?? String(e)}`);
        }
        get().appendMetrics(id, step, values);
      },
      async recordEval(id, step, values) {
        try {
          await putStep({ runId: id, step, values }, evalDb());
        } catch (e) {
          onPersistError(`Could not save the evaluation of step ${step}: ${(e as Error)?.message ?? String(e)}`);
        }
        get().appendMetrics(id, step, values);
      },
      truncateMetrics(id, step) {
        void deleteSteps(id, step).catch(() => undefined);
        void deleteSteps(id, step, evalDb()).catch(() => undefined);
        set((s) => ({
          runs: s.runs.map((r) => {
            if (r.id !== id) return r;
            const metrics: Record<string, Series> = {};
            for (const [k, v] of Object.entries(r.metrics)) {
              const n = v.step.findIndex((x) => x > step);
              metrics[k] = n < 0 ? v : { step: v.step.slice(0, n), value: v.value.slice(0, n) };
            }
            return { ...r, metrics };
          }),
        }));
      },
      setEvalImages: (id, imageIds) => set((s) => ({ runs: s.runs.map((r) => (r.id === id ? { ...r, evalImageIds: imageIds } : r)) })),
      setCheckpoint: (id, step) => set((s) => ({ runs: s.runs.map((r) => (r.id === id ? { ...r, checkpointStep: step } : r)) })),
      setStatus: (id, status, error) => {
        set((s) => ({ runs: s.runs.map((r) => (r.id === id ? { ...r, status, error } : r)) }));
        // an ended run is written now, not a second later: a reload right after shows it ended as it did
        if (status !== 'running' && status !== 'paused') flushStores();
      },
      rename: (id, name) => set((s) => ({ runs: s.runs.map((r) => (r.id === id ? { ...r, name } : r)) })),
      toggleVisible: (id) => set((s) => ({ runs: s.runs.map((r) => (r.id === id ? { ...r, visible: !r.visible } : r)) })),
      remove: (id) => {
        void deleteSteps(id).catch(() => undefined);
        void deleteSteps(id, undefined, evalDb()).catch(() => undefined);
        set((s) => ({ runs: s.runs.filter((r) => r.id !== id) }));
      },
    }),
    {
      name: 'runs',
      version: 1,
      // status and checkpoint changes: write at most once a second (and when the tab is hidden)
      storage: withStepRows(idbStorage<{ runs: RunRecord[] }>(1000)),
      // the series live in the metrics store, one row per step
      partialize: (s) => ({ runs: s.runs.map((r) => ({ ...r, metrics: {} })) }),
      // A run that was running or paused when the tab closed did not finish: it is stopped now.
      merge: (persisted, current) => ({
        ...current,
        runs: ((persisted as { runs?: RunRecord[] })?.runs ?? []).map((r) => (r.status === 'running' || r.status === 'paused' ? { ...r, status: 'stopped' as const } : r)),
      }),
    },
  ),
);

/**
 * The run history's storage with the series filled in from the step rows on load. A run saved by an
 * older build keeps the series it carried, and they are moved into step rows once.
 */
function withStepRows(inner: PersistStorage<{ runs: RunRecord[] }>): PersistStorage<{ runs: RunRecord[] }> {
  return {
    ...inner,
    getItem: async (name) => {
      const none = () => new Map<string, StepRow[]>();
      const [v, rows, evals] = await Promise.all([inner.getItem(name), loadAllSteps().catch(none), loadAllSteps(evalDb()).catch(none)]);
      if (!v?.state?.runs) return v;
      const legacy: StepRow[] = [];
      const runs = v.state.runs.map((r) => {
        const mine = rows.get(r.id);
        // the evaluations' names (eval_…) never clash with a step's
        if (mine?.length) return { ...r, metrics: { ...seriesOf(mine), ...seriesOf(evals.get(r.id) ?? []) } };
        if (r.metrics && Object.keys(r.metrics).length) legacy.push(...rowsOf(r.id, r.metrics));
        return { ...r, metrics: r.metrics ?? {} };
      });
      if (legacy.length) void putSteps(legacy).catch(() => undefined);
      return { ...v, state: { ...v.state, runs } };
    },
  };
}
