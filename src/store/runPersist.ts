// IndexedDB storage for the studio's persisted zustand stores (train settings, run history).
// Values are stored by structured clone (no JSON), so typed arrays and Dates survive as they are.
// Writes are coalesced: a store that changes on every training step writes at most once per
// `throttleMs`, and whatever is pending is written when the page is hidden.
import { createStore, del, get, set, type UseStore } from 'idb-keyval';
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
