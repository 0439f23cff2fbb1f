// One writer per dataset across tabs (Web Locks), and change notices between tabs (BroadcastChannel).
// The tab holding `patchwork-dataset:<id>` may write; another tab opening the same dataset gets it
// read-only and queues for the lock, becoming the writer when the first tab lets go.

export interface DatasetLock {
  /** true when this tab may write */
  writable: boolean;
  /** lets go of the lock (or drops the queued request) */
  release(): void;
}

export function lockDataset(id: string, onGranted: () => void): Promise<DatasetLock> {
  const locks = (globalThis.navigator as Navigator | undefined)?.locks;
  if (!locks) return Promise.resolve({ writable: true, release() {} }); // no Web Locks: single-tab semantics
  const name = `patchwork-dataset:${id}`;
  return new Promise((resolve) => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const queue = new AbortController();
    locks
      .request(name, { ifAvailable: true }, async (lock) => {
        if (lock) {
          resolve({ writable: true, release });
          await held; // the lock is held until this promise settles
          return;
        }
        // Someone else writes: wait in line, without blocking this callback.
        locks
          .request(name, { signal: queue.signal }, async () => {
            onGranted();
            await held;
          })
          .catch(() => undefined); // aborted when the dataset is closed first
        resolve({
          writable: false,
          release() {
            queue.abort();
            release();
          },
        });
      })
      .catch(() => resolve({ writable: true, release() {} }));
  });
}

export type DatasetEvent = { type: 'datasets' } | { type: 'images'; datasetId: string };

const channel = typeof BroadcastChannel !== 'undefined' ? new BroadcastChannel('patchwork-datasets') : null;

export function broadcast(e: DatasetEvent): void {
  channel?.postMessage(e);
}

export function onBroadcast(fn: (e: DatasetEvent) => void): () => void {
  if (!channel) return () => {};
  const h = (ev: MessageEvent) => fn(ev.data as DatasetEvent);
  channel.addEventListener('message', h);
  return () => channel.removeEventListener('message', h);
}
