// The page side of training: starts runs in the engine worker, turns its events into run history
// (metrics per step, status, checkpoints) and the live state the Train screen shows (step, loss,
// load progress, warnings). Pause / Resume / Stop go straight to the worker, which acts between steps.
import { create } from 'zustand';
import { get as idbGet } from 'idb-keyval';
import { flushWrites } from './dataset.ts';
import { getDataset, listImages } from '../data/datasetDb.ts';
import { taskRecords } from '../data/formats/records.ts';
import { countTrainable, untrainableReason, type Trainable } from './trainable.ts';
import { runDb } from './runPersist.ts';
import { useRuns, type RunStatus } from './runs.ts';
import type { TrainConfig } from './runConfig.ts';
import { trainer } from './runtime.ts';
import { callback } from '../worker/client.ts';
import type { AdapterInfo, LoadProgress, ModelInfo, ModelSpec, RunState, RunSummary, TrainEvent } from '../worker/api.ts';

export interface ActiveRun {
  runId: string;
  state: RunState;
  step: number;
  totalSteps: number;
  /** last raw loss */
  loss?: number;
  tokensPerS?: number;
  gpuBytes?: number;
  epoch?: number;
  progress?: LoadProgress;
  startedAt: number;
  /** wall time of the last step, for the ETA */
  secPerStep?: number;
  /** the examples and the image bounds the engine trains with (a dataset's own min/max pixels); the held-out split's size */
  data?: { examples: number; minPixels: number; maxPixels: number; evalExamples?: number; evalImages?: number; datasetImages?: number };
  /** the held-out split being evaluated after `step` (training waits for it); absent otherwise */
  evaluating?: { step: number; done: number; total: number };
}

interface TrainingStore {
  active: ActiveRun | null;
  /** notes from the engine for the current run (LoRA dropout ignored, image bounds taken from the dataset, ...) */
  warnings: string[];
  /** the last run's end, or why it could not start */
  message: { level: 'info' | 'error'; text: string; skipInvalid?: () => void } | null;
  model: ModelInfo | null;
  /** a control request in flight (buttons wait for it) */
  busy: boolean;
  /** an adapter imported on the Export screen (on the engine's model until a run replaces it) */
  imported: AdapterInfo | null;
}

export const useTraining = create<TrainingStore>(() => ({ active: null, warnings: [], message: null, model: null, busy: false, imported: null }));
const set = useTraining.setState;
const get = useTraining.getState;

// ---- local model folders: the picked Files live only in this page -------------------------------

let localFiles: File[] | undefined;
export function setLocalModelFiles(files: File[] | undefined): void {
  localFiles = files;
}

/** The local model folder's files: picked in this page, or reopened from the saved directory handle. */
export async function localModelFiles(): Promise<File[] | undefined> {
  if (localFiles?.length) return localFiles;
  const handle = await idbGet<FileSystemDirectoryHandle>('model.localHandle', runDb()).catch(() => undefined);
  if (!handle) return undefined;
  const h = handle as FileSystemDirectoryHandle & { requestPermission?(o: { mode: 'read' }): Promise<PermissionState>; values(): AsyncIterable<FileSystemHandle> };
  if (h.requestPermission && (await h.requestPermission({ mode: 'read' })) !== 'granted') return undefined;
  const files: File[] = [];
  for await (const e of h.values()) if (e.kind === 'file') files.push(await (e as FileSystemFileHandle).getFile());
  return (localFiles = files);
}

export async function modelSpec(c: TrainConfig): Promise<ModelSpec> {
  if (c.model.source === 'hub') return { source: 'hub', repo: c.model.hubId.trim(), endpoint: c.model.endpoint, revision: c.model.revision };
  if (c.model.source === 'local') return { source: 'local', name: c.model.local?.name, files: await localModelFiles() };
  return { source: 'tiny' };
}

export function modelName(c: TrainConfig): string {
  return c.model.source === 'hub' ? c.model.hubId.trim() : c.model.source === 'local' ? (c.model.local?.name ?? 'local folder') : 'tiny';
}

// ---- metrics --------------------------------------------------------------------------------------

/** Bookkeeping values shown in the status line, not charted. */
const NOT_CHARTED = new Set(['step', 'epoch', 'num_tokens', 'gpu_bytes', 'samples_per_s', 'learning_rate']);

/** The engine's step metrics (trl names) → the chart series (`lr` for learning_rate). */
export function chartMetrics(m: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  if (m.learning_rate !== undefined) out.lr = m.learning_rate;
  for (const [k, v] of Object.entries(m)) if (!NOT_CHARTED.has(k) && Number.isFinite(v)) out[k] = v;
  return out;
}

/** An evaluation's metrics (session/eval.ts: trl names, eval_ prefixed) → the series kept with the run: the finite ones. */
export function evalChartMetrics(m: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(m)) if (k.startsWith('eval_') && Number.isFinite(v)) out[k] = v;
  return out;
}

function runStatus(s: RunState): RunStatus {
  switch (s) {
    case 'paused': return 'paused';
    case 'done': return 'done';
    case 'failed': return 'failed';
    case 'stopped': case 'device-lost': return 'stopped';
    default: return 'running';
  }
}

function onEvent(runId: string): (e: TrainEvent) => void {
  const runs = useRuns.getState();
  let lastT = performance.now();
  return (e) => {
    const a = get().active;
    const mine = a?.runId === runId ? a : null;
    switch (e.type) {
      case 'status':
        if (mine) set({ active: { ...mine, state: e.status, ...(e.step !== undefined ? { step: e.step } : {}), progress: e.status === 'loading' ? mine.progress : undefined } });
        runs.setStatus(runId, runStatus(e.status), e.message);
        break;
      case 'progress':
        if (mine) set({ active: { ...mine, progress: e.progress } });
        break;
      case 'model':
        set({ model: e.info });
        break;
      case 'data':
        if (mine) {
          const held = e.evalExamples ? { evalExamples: e.evalExamples, evalImages: e.evalImages?.length, datasetImages: e.datasetImages } : {};
          set({ active: { ...mine, data: { examples: e.examples, minPixels: e.minPixels, maxPixels: e.maxPixels, ...held } } });
        }
        // which images the run never trains on (the Predictions screen can score them)
        if (e.evalImageIds?.length) runs.setEvalImages(runId, e.evalImageIds);
        break;
      case 'warning':
        if (!get().warnings.includes(e.message)) set({ warnings: [...get().warnings, e.message] });
        break;
      case 'resumed':
        runs.truncateMetrics(runId, e.step);
        if (mine) set({ active: { ...mine, step: e.step } });
        lastT = performance.now();
        break;
      case 'step': {
        const m = e.metrics;
        const now = performance.now();
        const secPerStep = (now - lastT) / 1000;
        lastT = now;
        // shown once its row is committed: a tab closed at any moment loses no step it showed
        void runs.recordStep(runId, e.step, chartMetrics(m)).then(() => {
          const cur = get().active;
          if (cur?.runId === runId) set({ active: { ...cur, step: e.step, totalSteps: e.totalSteps, loss: m.loss, tokensPerS: m.tokens_per_s, gpuBytes: m.gpu_bytes, epoch: m.epoch, secPerStep } });
        });
        break;
      }
      case 'checkpoint':
        runs.setCheckpoint(runId, e.step);
        break;
      case 'eval-progress':
        if (mine) set({ active: { ...mine, evaluating: { step: e.step, done: e.done, total: e.total } } });
        break;
      case 'eval':
        // drawn once committed, as a step is
        void runs.recordEval(runId, e.step, evalChartMetrics(e.metrics)).then(() => {
          const cur = get().active;
          if (cur?.runId === runId && cur.evaluating?.step === e.step) set({ active: { ...cur, evaluating: undefined } });
        });
        break;
    }
  };
}

async function drive(runId: string, start: () => Promise<RunSummary>, retrySkipping?: () => void): Promise<void> {
  set({ active: { runId, state: 'loading', step: 0, totalSteps: 0, startedAt: Date.now() }, warnings: [], message: null });
  try {
    const sum = await start();
    const text =
      sum.status === 'done' ? `Finished: ${sum.step} steps.`
      : sum.status === 'stopped' ? `Stopped at step ${sum.step}; the checkpoint of step ${sum.checkpointStep ?? 0} is kept.`
      : sum.message ?? `The run ended: ${sum.status}.`;
    // refused for bad records: the message offers the same run again, leaving the named records out
    const skip = sum.invalidRecords && retrySkipping ? { skipInvalid: retrySkipping } : {};
    set({ message: { level: sum.status === 'done' || sum.status === 'stopped' ? 'info' : 'error', text, ...skip } });
  } catch (e) {
    // refused before it started (another tab holds the run, no settings for the run, ...): the run record is left as it was
    set({ message: { level: 'error', text: (e as Error).message } });
  } finally {
    set({ active: null, busy: false });
  }
}

/** The stored dataset's records counted against the method, and why it cannot train (undefined: it can). */
export async function trainableOf(datasetId: string, method: TrainConfig['method']): Promise<Trainable & { name: string; reason?: string }> {
  const [ds, images] = await Promise.all([getDataset(datasetId), listImages(datasetId)]);
  if (!ds || ds.deletedAt) return { name: '', images: 0, kinds: {}, examples: 0, exampleImages: 0, reason: 'choose a dataset' };
  const t = countTrainable(images.filter((r) => !r.deletedAt).map((r) => taskRecords(ds, r)), method);
  return { ...t, name: ds.name, reason: untrainableReason(ds.name, t, method) };
}

/** Start a new run of `config` on a stored dataset. */
export async function startRun(config: TrainConfig, datasetId: string, opts: { startFrom?: 'fresh' | 'imported'; skipInvalid?: boolean } = {}): Promise<string | undefined> {
  const api = trainer();
  if (!api || get().active) return undefined;
  await flushWrites(); // the last label edits reach IndexedDB before the worker reads it
  // nothing to train on: say so here, without a run record that could only fail
  const t = await trainableOf(datasetId, config.method);
  if (t.reason) {
    set({ message: { level: 'error', text: t.reason.charAt(0).toUpperCase() + t.reason.slice(1) + '.' } });
    return undefined;
  }
  const model = await modelSpec(config);
  if (model.source === 'local' && !model.files?.length) {
    set({ message: { level: 'error', text: 'Choose the local model folder again: the browser needs it picked in this session.' } });
    return undefined;
  }
  const runId = useRuns.getState().addRun({ method: config.method, model: modelName(config), config, datasetId });
  set({ imported: null }); // the run takes it over, or a fresh adapter replaces it
  const skipping = () => void startRun(config, datasetId, { ...opts, skipInvalid: true });
  void drive(runId, () => api.train({ runId, config, model, data: { datasetId }, startFrom: opts.startFrom, ...(opts.skipInvalid ? { skipInvalid: true } : {}) }, callback(onEvent(runId))), opts.skipInvalid ? undefined : skipping);
  return runId;
}

/** Continue a run of the history from its last checkpoint. */
export async function resumeRun(runId: string): Promise<void> {
  const api = trainer();
  const run = useRuns.getState().runs.find((r) => r.id === runId);
  if (!api || !run || get().active) return;
  const files = run.config.model.source === 'local' ? await localModelFiles() : undefined;
  void drive(runId, () => api.resumeRun(runId, callback(onEvent(runId)), files));
}

async function control(fn: 'pause' | 'resume' | 'stop'): Promise<void> {
  const api = trainer();
  if (!api || !get().active) return;
  set({ busy: true });
  try {
    await api[fn]();
  } catch (e) {
    set({ message: { level: 'error', text: (e as Error).message } });
  } finally {
    set({ busy: false });
  }
}

export const pauseRun = () => control('pause');
export const continueRun = () => control('resume');
export const stopRun = () => control('stop');

/** Forget a run: its history entry and its checkpoints. */
export async function deleteRunEverywhere(runId: string): Promise<void> {
  if (get().active?.runId === runId) return;
  useRuns.getState().remove(runId);
  await trainer()?.deleteRun(runId).catch(() => undefined);
}
