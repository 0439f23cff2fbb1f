// IndexedDB storage for the studio's persisted zustand stores (train settings, run history).
// Values are stored by structured clone (no JSON), so typed arrays and Dates survive as they are.
// Writes are coalesced: a store that changes on every training step writes at most once per
// `throttleMs`, and whatever is pending is written when the page is hidden.
import { createStore, del, get, promisifyRequest, set, setMany, type UseStore } from 'idb-keyval';
import type { PersistStorage, StorageValue } from 'zustand/middleware';

let db: UseStore | undefined;
/** One database for the studio's own stores, apart from the dataset's. */
export function runDb(): UseStore {
  return (db ??= createStore('patchwork-runs', 'kv'));
}

const flushers = new Set<() => void>();
if (typeof document !== 'undefined') {
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden') for (const f of flushers) f();
  });
  window.addEventListener('pagehide', () => {
    for (const f of flushers) f();
  });
}

/** Write whatever the throttled stores hold now (a run that ended: its status must not wait for the timer). */
export function flushStores(): void {
  for (const f of flushers) f();
}

/** Called with a readable message when a write fails (quota exceeded, private mode). */
export let onPersistError: (message: string) => void = (m) => console.error(m);
export function setPersistErrorHandler(fn: (message: string) => void): void {
  onPersistError = fn;
}

export function idbStorage<S>(throttleMs = 0): PersistStorage<S> {
  let pending: { name: string; value: StorageValue<S> } | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const write = () => {
    timer = undefined;
    const p = pending;
    pending = undefined;
    if (!p) return;
    set(p.name, p.value, runDb()).catch((e: unknown) => {
      const err = e as DOMException;
      onPersistError(
        err?.name === 'QuotaExceededError'
          ? `Could not save "${p.name}": the browser's storage quota is full. Delete old runs or datasets to make room.`
          : `Could not save "${p.name}" to IndexedDB: ${err?.message ?? String(e)}`,
      );
    });
  };
  flushers.add(write);
  return {
    getItem: async (name) => (await get<StorageValue<S>>(name, runDb())) ?? null,
    setItem: (name, value) => {
      pending = { name, value };
      if (throttleMs <= 0) return write();
      timer ??= setTimeout(write, throttleMs);
    },
    removeItem: (name) => del(name, runDb()),
  };
}

// ---- per-step metrics: append-only rows, durable before they are drawn ---------------------------
//
// One row per optimizer step, keyed [runId, step], in its own database. A row is written in its own
// small transaction as the step arrives and the charts draw the step only once that transaction has
// committed, so closing or killing the tab at any moment loses nothing the charts showed (the run
// history itself, in 'patchwork-runs', no longer carries the series).

/** metric name → parallel arrays of step and value */
export type Series = { step: number[]; value: number[] };

export interface StepRow {
  runId: string;
  step: number;
  values: Record<string, number>;
}

let mdb: UseStore | undefined;
export function metricsDb(): UseStore {
  return (mdb ??= createStore('patchwork-metrics', 'steps'));
}

// The held-out evaluations (eval_loss, eval_grounding/mean_iou, ...) are rows of the same shape in a
// database of their own: an evaluation runs after the step it is keyed by, so it cannot share that
// step's row, and its own transaction commits before the page draws it, as a step's does.
let edb: UseStore | undefined;
export function evalDb(): UseStore {
  return (edb ??= createStore('patchwork-evals', 'steps'));
}

const runRange = (runId: string, after = -Infinity) => IDBKeyRange.bound([runId, after], [runId, Infinity], after !== -Infinity, false);

/** Resolves once the row is committed (`db`: metricsDb, or evalDb for an evaluation). */
export function putStep(row: StepRow, db = metricsDb()): Promise<void> {
  return set([row.runId, row.step], row, db);
}

export function putSteps(rows: StepRow[], db = metricsDb()): Promise<void> {
  return setMany(rows.map((r) => [[r.runId, r.step], r]), db);
}

/** Every stored row, grouped by run, in step order (keys sort by run id, then step). */
export async function loadAllSteps(db = metricsDb()): Promise<Map<string, StepRow[]>> {
  const rows = await db('readonly', (s) => promisifyRequest(s.getAll() as IDBRequest<StepRow[]>));
  const out = new Map<string, StepRow[]>();
  for (const r of rows) {
    const list = out.get(r.runId);
    if (list) list.push(r);
    else out.set(r.runId, [r]);
  }
  return out;
}

/** Drop a run's rows after `step` (all of them when `step` is omitted). */
export function deleteSteps(runId: string, after?: number, db = metricsDb()): Promise<void> {
  return db('readwrite', (s) => {
    s.delete(runRange(runId, after));
    return promisifyRequest(s.transaction);
  });
}

/** Series of a run from its step rows (in step order). */
export function seriesOf(rows: readonly StepRow[]): Record<string, Series> {
  const metrics: Record<string, Series> = {};
  for (const r of rows) {
    for (const [k, v] of Object.entries(r.values)) {
      const m = (metrics[k] ??= { step: [], value: [] });
      m.step.push(r.step);
      m.value.push(v);
    }
  }
  return metrics;
}

/** Step rows of a run's series (the inverse of seriesOf). */
export function rowsOf(runId: string, metrics: Record<string, Series>): StepRow[] {
  const byStep = new Map<number, Record<string, number>>();
  for (const [k, s] of Object.entries(metrics)) s.step.forEach((step, i) => ((byStep.get(step) ?? byStep.set(step, {}).get(step)!)[k] = s.value[i]));
  return [...byStep].sort((a, b) => a[0] - b[0]).map(([step, values]) => ({ runId, step, values }));
}
