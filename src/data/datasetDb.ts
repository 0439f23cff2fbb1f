// IndexedDB persistence of datasets. Plain IndexedDB (with idb-keyval's promisifyRequest) rather
// than idb-keyval's key-value stores, because an image's Blob and its record must be written in
// ONE transaction over two object stores: if the quota runs out, the transaction aborts and
// nothing is half-written. No React here: a worker can import this (see datasetSamples.ts).
//
// Database 'patchwork-datasets' v1:
//   datasets  keyPath id           DatasetMeta
//   images    keyPath id, index datasetId    ImageRecord (metadata + labels, small JSON)
//   blobs     keyPath id (= image id)       { id, image: Blob, thumb: Blob }

import { promisifyRequest } from 'idb-keyval';
import type { DatasetMeta, ImageRecord } from './formats/types.ts';

export interface ImageBlobs {
  id: string;
  image: Blob;
  thumb: Blob;
}

const DB_NAME = 'patchwork-datasets';
let dbp: Promise<IDBDatabase> | null = null;

export function openDb(): Promise<IDBDatabase> {
  if (dbp) return dbp;
  const req = indexedDB.open(DB_NAME, 1);
  req.onupgradeneeded = () => {
    const db = req.result;
    if (!db.objectStoreNames.contains('datasets')) db.createObjectStore('datasets', { keyPath: 'id' });
    if (!db.objectStoreNames.contains('images')) db.createObjectStore('images', { keyPath: 'id' }).createIndex('datasetId', 'datasetId');
    if (!db.objectStoreNames.contains('blobs')) db.createObjectStore('blobs', { keyPath: 'id' });
  };
  dbp = promisifyRequest(req).then((db) => {
    // Another tab upgrading the schema: close so it can proceed.
    db.onversionchange = () => {
      db.close();
      dbp = null;
    };
    return db;
  });
  dbp.catch(() => (dbp = null));
  return dbp;
}

/** Raised when the browser's storage quota is exhausted. */
export class QuotaError extends Error {
  constructor(message = 'Browser storage is full') {
    super(message);
    this.name = 'QuotaError';
  }
}

export function isQuotaError(e: unknown): boolean {
  const err = e as { name?: string; message?: string } | null;
  return !!err && (err.name === 'QuotaExceededError' || err.name === 'QuotaError' || /quota/i.test(err.message ?? ''));
}

type StoreName = 'datasets' | 'images' | 'blobs';

/** Runs `fn` in one transaction; resolves when it commits, rejects (QuotaError when full) when it aborts. */
async function tx<T>(stores: StoreName[], mode: IDBTransactionMode, fn: (t: IDBTransaction) => T | Promise<T>): Promise<T> {
  const db = await openDb();
  const t = db.transaction(stores, mode);
  const done = new Promise<void>((resolve, reject) => {
    t.oncomplete = () => resolve();
    const fail = () => {
      const e = t.error ?? new Error('transaction aborted');
      reject(isQuotaError(e) ? new QuotaError() : e);
    };
    t.onabort = fail;
    t.onerror = (ev) => ev.preventDefault(); // surfaced by onabort
  });
  let result: T;
  try {
    result = await fn(t);
  } catch (e) {
    try {
      t.abort();
    } catch {
      /* already finished */
    }
    await done.catch(() => undefined);
    throw isQuotaError(e) ? new QuotaError() : e;
  }
  await done;
  return result;
}

export async function listDatasets(): Promise<DatasetMeta[]> {
  return tx(['datasets'], 'readonly', (t) => promisifyRequest(t.objectStore('datasets').getAll() as IDBRequest<DatasetMeta[]>));
}

export async function getDataset(id: string): Promise<DatasetMeta | undefined> {
  return tx(['datasets'], 'readonly', (t) => promisifyRequest(t.objectStore('datasets').get(id) as IDBRequest<DatasetMeta | undefined>));
}

export async function putDataset(ds: DatasetMeta): Promise<void> {
  await tx(['datasets'], 'readwrite', (t) => void t.objectStore('datasets').put(ds));
}

export async function listImages(datasetId: string): Promise<ImageRecord[]> {
  return tx(['images'], 'readonly', (t) => promisifyRequest(t.objectStore('images').index('datasetId').getAll(datasetId) as IDBRequest<ImageRecord[]>));
}

export async function countImages(): Promise<Map<string, number>> {
  // Counting every record is cheap (small JSON) and also skips soft-deleted ones.
  const all = await tx(['images'], 'readonly', (t) => promisifyRequest(t.objectStore('images').getAll() as IDBRequest<ImageRecord[]>));
  const m = new Map<string, number>();
  for (const r of all) if (!r.deletedAt) m.set(r.datasetId, (m.get(r.datasetId) ?? 0) + 1);
  return m;
}

/** An image record and its blobs, atomically. */
export async function addImage(rec: ImageRecord, blobs: ImageBlobs): Promise<void> {
  await tx(['images', 'blobs'], 'readwrite', (t) => {
    t.objectStore('blobs').put(blobs);
    t.objectStore('images').put(rec);
  });
}

export async function putImages(recs: ImageRecord[]): Promise<void> {
  if (!recs.length) return;
  await tx(['images'], 'readwrite', (t) => {
    const s = t.objectStore('images');
    for (const r of recs) s.put(r);
  });
}

export async function getBlobs(id: string): Promise<ImageBlobs | undefined> {
  return tx(['blobs'], 'readonly', (t) => promisifyRequest(t.objectStore('blobs').get(id) as IDBRequest<ImageBlobs | undefined>));
}

/** Removes images and their blobs for good. */
export async function purgeImages(ids: string[]): Promise<void> {
  if (!ids.length) return;
  await tx(['images', 'blobs'], 'readwrite', (t) => {
    for (const id of ids) {
      t.objectStore('images').delete(id);
      t.objectStore('blobs').delete(id);
    }
  });
}

/** Removes a dataset, its images and their blobs for good. */
export async function purgeDataset(id: string): Promise<void> {
  const imgs = await listImages(id);
  await tx(['datasets', 'images', 'blobs'], 'readwrite', (t) => {
    t.objectStore('datasets').delete(id);
    for (const r of imgs) {
      t.objectStore('images').delete(r.id);
      t.objectStore('blobs').delete(r.id);
    }
  });
}

/** Soft-deleted things older than `olderThanMs` (their undo window is over) are purged. */
export async function purgeDeleted(olderThanMs: number, now = Date.now()): Promise<void> {
  const dss = await listDatasets();
  for (const d of dss) if (d.deletedAt && now - d.deletedAt > olderThanMs) await purgeDataset(d.id);
  const all = await tx(['images'], 'readonly', (t) => promisifyRequest(t.objectStore('images').getAll() as IDBRequest<ImageRecord[]>));
  await purgeImages(all.filter((r) => r.deletedAt && now - r.deletedAt > olderThanMs).map((r) => r.id));
}
