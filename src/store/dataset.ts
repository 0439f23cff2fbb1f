// Datasets store (zustand): the list of datasets, the open dataset's images and labels, notices.
// Every change is written through to IndexedDB (data/datasetDb.ts). The trainer does not need this
// file: it reads with loadSamples() (data/datasetSamples.ts).

import { create } from 'zustand';
import { exportDataset as buildExport, type ExportFormat } from '../data/formats/export.ts';
import type { BoxFrame } from '../data/formats/coords.ts';
import { labelsForImage, mergeLabels, planImport, type SourceFile } from '../data/formats/import.ts';
import { formatError } from '../data/formats/jsonl.ts';
import type { ParseOpts } from '../data/formats/parse.ts';
import { TASK_KINDS, isLabelled, newDataset, uid, type DatasetMeta, type ImageRecord, type Labels, type TaskKind } from '../data/formats/types.ts';
import { zipDataset } from '../data/formats/zip.ts';
import * as db from '../data/datasetDb.ts';
import { contentHash, ImageError, processImage } from './datasetImage.ts';
import { broadcast, lockDataset, onBroadcast, type DatasetLock } from './datasetLock.ts';
import { byOrder } from '../data/datasetSamples.ts';

export { loadSamples, type Sample } from '../data/datasetSamples.ts';

export type Filter = 'all' | 'labelled' | 'unlabelled';

export interface Notice {
  id: string;
  level: 'info' | 'success' | 'warn' | 'error';
  title: string;
  details?: string[];
  /** shows an Undo button */
  undo?: () => void | Promise<void>;
  /** runs when the notice goes away without Undo (e.g. the real purge) */
  onClose?: () => void | Promise<void>;
  /** auto-dismiss after ms */
  ttl?: number;
}

export interface Progress {
  label: string;
  done: number;
  total: number;
}

export interface DatasetState {
  ready: boolean;
  datasets: DatasetMeta[];
  counts: Record<string, number>;
  currentId: string | null;
  /** the open dataset's images (soft-deleted ones excluded), in order */
  images: ImageRecord[];
  /** another tab writes this dataset */
  readOnly: boolean;
  filter: Filter;
  /** the image open in the labeler */
  openImageId: string | null;
  progress: Progress | null;
  notices: Notice[];
  usage: { used: number; quota: number } | null;
  /** how bbox_2d answers in imported files are read (see parse.ts) when a new dataset is made; each dataset keeps its own (DatasetMeta.answerFrame) */
  answerFrame: ParseOpts['answerFrame'];
}

export const useDatasetStore = create<DatasetState>(() => ({
  ready: false,
  datasets: [],
  counts: {},
  currentId: null,
  images: [],
  readOnly: false,
  filter: 'all',
  openImageId: null,
  progress: null,
  notices: [],
  usage: null,
  answerFrame: readFrame(),
}));

const FRAME_KEY = 'patchwork.answerFrame';

function readFrame(): BoxFrame {
  try {
    const v = localStorage.getItem(FRAME_KEY);
    return v === 'abs' || v === 'norm1000' || v === 'resized' ? v : 'resized';
  } catch {
    return 'resized';
  }
}

export const FRAME_TITLES: Record<'resized' | 'abs' | 'norm1000', string> = {
  resized: 'the smart-resized frame (Qwen2.5-VL)',
  abs: 'original image pixels',
  norm1000: '0–1000 normalized (Qwen2-VL)',
};

/** The frame bbox_2d answers of files imported into `ds` are read in (every route: drop, pick, paste, zip). */
export function importFrame(ds: DatasetMeta | undefined): BoxFrame {
  return ds?.answerFrame ?? get().answerFrame;
}

/** Sets the import frame of the open dataset (and the default of new ones). */
export async function setImportFrame(frame: BoxFrame): Promise<void> {
  set({ answerFrame: frame });
  try {
    localStorage.setItem(FRAME_KEY, frame);
  } catch {
    /* private mode */
  }
  const ds = currentDataset();
  if (ds && ds.answerFrame !== frame) await updateDataset(ds.id, { answerFrame: frame });
}

const get = useDatasetStore.getState;
const set = useDatasetStore.setState;

/** Undo windows: soft-deleted things are purged when their notice closes, or at the next start after this. */
const UNDO_MS = 12_000;
const VIEW_KEY = 'patchwork.datasetView';

let lock: DatasetLock | null = null;

// ---------------------------------------------------------------- notices

export function notify(n: Omit<Notice, 'id'>): string {
  const id = uid('n');
  set({ notices: [...get().notices.slice(-6), { ...n, id }] });
  return id;
}

/** Closes a notice; `undo` runs its undo instead of its onClose. */
export async function dismissNotice(id: string, undo = false): Promise<void> {
  const n = get().notices.find((x) => x.id === id);
  set({ notices: get().notices.filter((x) => x.id !== id) });
  if (!n) return;
  try {
    if (undo && n.undo) await n.undo();
    else await n.onClose?.();
  } catch (e) {
    notify({ level: 'error', title: `Could not ${undo ? 'undo' : 'finish'}: ${(e as Error).message}` });
  }
}

/** Undoes the most recent undoable notice (Ctrl+Z on the dataset screen). */
export async function undoLast(): Promise<boolean> {
  const n = [...get().notices].reverse().find((x) => x.undo);
  if (!n) return false;
  await dismissNotice(n.id, true);
  return true;
}

function readOnlyRefusal(): boolean {
  if (!get().readOnly) return false;
  notify({ level: 'warn', title: 'This dataset is open in another tab, so it is read-only here. Close it there to edit here.', ttl: 6000 });
  return true;
}

// ---------------------------------------------------------------- start

let started = false;

export async function initDatasets(): Promise<void> {
  if (started) return;
  started = true;
  try {
    await db.purgeDeleted(60_000);
  } catch {
    /* purge is housekeeping */
  }
  await reloadDatasets();
  const view = readView();
  const ds = get().datasets;
  const pick = ds.find((d) => d.id === view.datasetId) ?? ds[0];
  set({ ready: true });
  if (pick) await openDataset(pick.id, view.datasetId === pick.id ? view.imageId : null);
  void refreshUsage();
  onBroadcast((e) => {
    if (e.type === 'datasets') void reloadDatasets();
    else if (e.datasetId === get().currentId && get().readOnly) void reloadImages();
  });
  // Ask the browser not to evict our data under storage pressure (best effort).
  void navigator.storage?.persist?.().catch(() => undefined);
}

async function reloadDatasets(): Promise<void> {
  const [list, counts] = await Promise.all([db.listDatasets(), db.countImages()]);
  const datasets = list.filter((d) => !d.deletedAt).sort((a, b) => a.createdAt - b.createdAt);
  set({ datasets, counts: Object.fromEntries(counts) });
  const cur = get().currentId;
  if (cur && !datasets.some((d) => d.id === cur)) {
    // Deleted in another tab.
    if (lock) lock.release();
    lock = null;
    set({ currentId: null, images: [], openImageId: null });
  }
}

async function reloadImages(): Promise<void> {
  const id = get().currentId;
  if (!id) return;
  const images = (await db.listImages(id)).filter((r) => !r.deletedAt).sort(byOrder);
  if (get().currentId !== id) return;
  const openImageId = images.some((r) => r.id === get().openImageId) ? get().openImageId : null;
  set({ images, openImageId, counts: { ...get().counts, [id]: images.length } });
}

export async function refreshUsage(): Promise<void> {
  try {
    const e = await navigator.storage?.estimate?.();
    if (e) set({ usage: { used: e.usage ?? 0, quota: e.quota ?? 0 } });
  } catch {
    /* not available */
  }
}

function readView(): { datasetId?: string; imageId?: string | null } {
  try {
    return JSON.parse(localStorage.getItem(VIEW_KEY) ?? '{}');
  } catch {
    return {};
  }
}

function saveView(): void {
  try {
    localStorage.setItem(VIEW_KEY, JSON.stringify({ datasetId: get().currentId, imageId: get().openImageId }));
  } catch {
    /* private mode */
  }
}

// ---------------------------------------------------------------- datasets

export function currentDataset(): DatasetMeta | undefined {
  const s = get();
  return s.datasets.find((d) => d.id === s.currentId);
}

function uniqueName(base: string): string {
  const names = new Set(get().datasets.map((d) => d.name.toLowerCase()));
  if (!names.has(base.toLowerCase())) return base;
  for (let k = 2; ; k++) if (!names.has(`${base} ${k}`.toLowerCase())) return `${base} ${k}`;
}

export async function createDataset(name?: string, kind: TaskKind = 'grounding'): Promise<string> {
  const ds = { ...newDataset(uniqueName(name?.trim() || 'Dataset'), kind), answerFrame: get().answerFrame };
  await db.putDataset(ds);
  set({ datasets: [...get().datasets, ds], counts: { ...get().counts, [ds.id]: 0 } });
  broadcast({ type: 'datasets' });
  await openDataset(ds.id);
  return ds.id;
}

export async function updateDataset(id: string, patch: Partial<Omit<DatasetMeta, 'id' | 'createdAt'>>): Promise<void> {
  const ds = get().datasets.find((d) => d.id === id);
  if (!ds) return;
  if (id === get().currentId && readOnlyRefusal()) return;
  const next = { ...ds, ...patch, updatedAt: Date.now() };
  if (patch.name !== undefined) next.name = patch.name.trim() || ds.name;
  set({ datasets: get().datasets.map((d) => (d.id === id ? next : d)) });
  try {
    await db.putDataset(next);
    broadcast({ type: 'datasets' });
  } catch (e) {
    set({ datasets: get().datasets.map((d) => (d.id === id ? ds : d)) });
    notify({ level: 'error', title: storageMessage(e, 'Could not save the dataset settings') });
  }
}

export function renameDataset(id: string, name: string): Promise<void> {
  return updateDataset(id, { name });
}

/** Is the dataset free of writers in other tabs? (ours counts as free) */
async function freeOfOtherTabs(id: string): Promise<boolean> {
  if (id === get().currentId) return !get().readOnly;
  const locks = navigator.locks;
  if (!locks) return true;
  return locks.request(`patchwork-dataset:${id}`, { ifAvailable: true }, async (l) => !!l);
}

export async function deleteDataset(id: string): Promise<void> {
  const ds = get().datasets.find((d) => d.id === id);
  if (!ds) return;
  if (!(await freeOfOtherTabs(id))) {
    notify({ level: 'warn', title: `"${ds.name}" is open in another tab; close it there before deleting it.`, ttl: 6000 });
    return;
  }
  const gone = { ...ds, deletedAt: Date.now() };
  await db.putDataset(gone);
  const rest = get().datasets.filter((d) => d.id !== id);
  set({ datasets: rest });
  broadcast({ type: 'datasets' });
  if (get().currentId === id) {
    if (rest[0]) await openDataset(rest[0].id);
    else {
      lock?.release();
      lock = null;
      set({ currentId: null, images: [], openImageId: null, readOnly: false });
      saveView();
    }
  }
  notify({
    level: 'info',
    title: `Deleted dataset "${ds.name}"`,
    ttl: UNDO_MS,
    undo: async () => {
      const back = { ...ds, deletedAt: undefined };
      await db.putDataset(back);
      await reloadDatasets();
      broadcast({ type: 'datasets' });
      await openDataset(id);
    },
    onClose: async () => {
      await db.purgeDataset(id);
      void refreshUsage();
    },
  });
}

export async function openDataset(id: string, imageId: string | null = null): Promise<void> {
  if (get().currentId === id && lock) {
    set({ openImageId: imageId });
    saveView();
    return;
  }
  lock?.release();
  lock = null;
  set({ currentId: id, images: [], openImageId: null, readOnly: false, filter: 'all' });
  const l = await lockDataset(id, () => {
    // The other tab let go: become the writer.
    if (get().currentId !== id) return;
    set({ readOnly: false });
    void reloadImages();
    notify({ level: 'success', title: 'The other tab closed this dataset; you can edit it here now.', ttl: 5000 });
  });
  if (get().currentId !== id) {
    l.release();
    return;
  }
  lock = l;
  const images = (await db.listImages(id)).filter((r) => !r.deletedAt).sort(byOrder);
  if (get().currentId !== id) return;
  set({
    images,
    readOnly: !l.writable,
    openImageId: imageId && images.some((r) => r.id === imageId) ? imageId : null,
    counts: { ...get().counts, [id]: images.length },
  });
  saveView();
}

// ---------------------------------------------------------------- images and labels

export function setFilter(filter: Filter): void {
  set({ filter });
}

export function openImage(imageId: string | null): void {
  set({ openImageId: imageId });
  saveView();
}

export function filteredImages(s: Pick<DatasetState, 'images' | 'filter'>, ds: DatasetMeta | undefined): ImageRecord[] {
  if (s.filter === 'all' || !ds) return s.images;
  const want = s.filter === 'labelled';
  return s.images.filter((r) => isLabelled(ds.kind, r.labels, ds.reward) === want);
}

// Label writes are coalesced per image and serialized.
const pending = new Map<string, ImageRecord>();
let writing: Promise<void> = Promise.resolve();
let scheduled = false;

function queueWrite(rec: ImageRecord): void {
  pending.set(rec.id, rec);
  if (scheduled) return;
  scheduled = true;
  writing = writing.then(async () => {
    // A microtask: edits of one event coalesce, and the transaction starts before a reload can cut it off.
    await Promise.resolve();
    scheduled = false;
    const batch = [...pending.values()];
    pending.clear();
    try {
      await db.putImages(batch);
      const ds = batch[0]?.datasetId;
      if (ds) broadcast({ type: 'images', datasetId: ds });
    } catch (e) {
      notify({ level: 'error', title: storageMessage(e, 'Could not save the labels'), details: ['The last change is shown but not stored; free some space and edit again.'] });
    }
  });
}

/** Resolves when every queued label write has reached IndexedDB. */
export async function flushWrites(): Promise<void> {
  while (scheduled || pending.size) await writing;
  await writing;
}

/** Replaces an image's labels (the labeler's history lives in ui/labeler). */
export function setLabels(imageId: string, labels: Labels): boolean {
  if (readOnlyRefusal()) return false;
  let rec: ImageRecord | undefined;
  const images = get().images.map((r) => (r.id === imageId ? (rec = { ...r, labels }) : r));
  if (!rec) return false;
  set({ images });
  queueWrite(rec);
  return true;
}

export async function deleteImages(ids: string[]): Promise<void> {
  if (!ids.length || readOnlyRefusal()) return;
  const now = Date.now();
  const gone = get().images.filter((r) => ids.includes(r.id)).map((r) => ({ ...r, deletedAt: now }));
  if (!gone.length) return;
  const dsId = get().currentId!;
  try {
    await db.putImages(gone);
  } catch (e) {
    notify({ level: 'error', title: storageMessage(e, 'Could not delete') });
    return;
  }
  const images = get().images.filter((r) => !ids.includes(r.id));
  set({ images, openImageId: ids.includes(get().openImageId ?? '') ? null : get().openImageId, counts: { ...get().counts, [dsId]: images.length } });
  broadcast({ type: 'images', datasetId: dsId });
  notify({
    level: 'info',
    title: `Deleted ${gone.length === 1 ? `"${gone[0].name}"` : `${gone.length} images`}`,
    ttl: UNDO_MS,
    undo: async () => {
      const back = gone.map(({ deletedAt: _d, ...r }) => r as ImageRecord);
      await db.putImages(back);
      if (get().currentId === dsId) {
        const all = [...get().images, ...back].sort(byOrder);
        set({ images: all, counts: { ...get().counts, [dsId]: all.length } });
      }
      broadcast({ type: 'images', datasetId: dsId });
    },
    onClose: async () => {
      await db.purgeImages(gone.map((r) => r.id));
      void refreshUsage();
    },
  });
}

export function storageMessage(e: unknown, what: string): string {
  if (db.isQuotaError(e)) return `${what}: browser storage is full. Delete images or datasets you no longer need, then try again.`;
  return `${what}: ${(e as Error)?.message ?? String(e)}`;
}

// ---------------------------------------------------------------- adding files

let cancelRequested = false;

export function cancelIngest(): void {
  cancelRequested = true;
}

function datasetNameFor(files: SourceFile[]): string {
  const first = files[0]?.path ?? '';
  const top = first.includes('/') ? first.split('/')[0] : first.replace(/\.(zip|jsonl|json)$/i, '');
  return files.length === 1 || first.includes('/') ? top || 'Dataset' : 'Dataset';
}

/**
 * Adds images and/or dataset files (JSONL, COCO, YOLO, zip) to the open dataset (a new one when
 * none is open). Each image is written with its record in one transaction: a full disk stops the
 * batch with nothing half-written. Problems are reported per file and per line.
 */
export async function addFiles(files: SourceFile[], opts: { newDataset?: boolean } = {}): Promise<void> {
  if (!files.length) return;
  if (get().progress) {
    notify({ level: 'warn', title: 'Still adding the previous files; try again when it is done.', ttl: 4000 });
    return;
  }
  if (get().currentId && !opts.newDataset && readOnlyRefusal()) return;
  cancelRequested = false;
  set({ progress: { label: 'Reading files', done: 0, total: files.length } });
  try {
    await ingest(files, opts);
  } catch (e) {
    notify({ level: 'error', title: storageMessage(e, 'Import failed') });
  } finally {
    set({ progress: null });
    void refreshUsage();
  }
}

async function ingest(files: SourceFile[], opts: { newDataset?: boolean }): Promise<void> {
  const target = !get().currentId || opts.newDataset ? undefined : currentDataset();
  const frame = importFrame(target);
  const plan = await planImport(files, { answerFrame: frame, existing: target ? get().images.map((r) => ({ id: r.id, name: r.name })) : [] });
  const details: string[] = [];
  const problems: string[] = [];

  // Target dataset.
  if (!target) {
    const name = plan.dataset?.name ?? datasetNameFor(files);
    await createDataset(name, plan.kind ?? 'grounding'); // with answerFrame = frame (the default of new datasets)
  }
  let ds = currentDataset()!;
  const startedEmpty = get().images.length === 0;
  const patch: Partial<DatasetMeta> = {};
  if (plan.dataset && startedEmpty) {
    const { kind, classes, minPixels, maxPixels, reward } = plan.dataset;
    Object.assign(patch, { kind, classes, minPixels, maxPixels, reward });
  } else if (plan.kind && plan.kind !== ds.kind) {
    if (startedEmpty) {
      patch.kind = plan.kind;
      details.push(`Task kind set to ${TASK_KINDS.find((k) => k.kind === plan.kind)?.title} from the imported records.`);
    } else {
      details.push(`The records look like ${plan.kind} but this dataset is ${ds.kind}: their labels are kept; switch the task kind to see them.`);
    }
  }
  const newClasses = plan.classes.filter((c) => !(patch.classes ?? ds.classes).includes(c));
  if (newClasses.length) patch.classes = [...(patch.classes ?? ds.classes), ...newClasses];
  if (Object.keys(patch).length) {
    await updateDataset(ds.id, patch);
    ds = currentDataset()!;
  }

  const dsId = ds.id;
  let order = get().images.reduce((m, r) => Math.max(m, r.order), 0);
  // Images already in the dataset: by content hash (SHA-256 of the file), by name + size for
  // images stored before hashes were kept.
  const byId = new Map(get().images.map((r) => [r.id, r]));
  const byHash = new Map<string, string>();
  for (const r of get().images) for (const h of [r.hash, r.storedHash]) if (h) byHash.set(h, r.id);
  const legacy = new Map(get().images.filter((r) => !r.hash).map((r) => [`${r.name}\u0000${r.bytes}`, r.id]));
  let added = 0;
  let duplicates = 0;
  let labelled = 0;
  let relabelled = 0;
  const changed = new Map<string, ImageRecord>();
  const total = plan.images.length;
  set({ progress: { label: 'Adding images', done: 0, total } });
  let batch: ImageRecord[] = [];
  const flushBatch = () => {
    if (get().currentId !== dsId) return;
    if (!batch.length && !changed.size) return;
    const images = [...get().images, ...batch].map((r) => changed.get(r.id) ?? r).sort(byOrder);
    set({ images, counts: { ...get().counts, [dsId]: images.length } });
    batch = [];
  };
  let lastFlush = performance.now();

  /** Labels of the import merged into an image already stored; a differing text answer becomes a copy. */
  const mergeInto = async (id: string, incoming: Labels[]): Promise<boolean> => {
    const rec = changed.get(id) ?? byId.get(id)!;
    const m = mergeLabels(rec.labels, incoming);
    if (m.added) {
      const next = { ...rec, labels: m.labels };
      await db.putImages([next]);
      changed.set(id, next);
      byId.set(id, next);
      relabelled++;
    }
    if (m.extra.length) {
      const blobs = await db.getBlobs(rec.id);
      if (!blobs) return m.added > 0;
      for (const labels of m.extra) {
        const copy: ImageRecord = { ...rec, id: uid('img'), name: `${rec.name} #${++order}`, order, addedAt: Date.now(), labels };
        await db.addImage(copy, { id: copy.id, image: blobs.image, thumb: blobs.thumb });
        batch.push(copy);
        added++;
      }
    }
    return m.added > 0 || m.extra.length > 0;
  };

  for (let i = 0; i < plan.images.length; i++) {
    if (cancelRequested) {
      problems.push(`Stopped by you after ${i} of ${total} images.`);
      break;
    }
    const p = plan.images[i];
    const f = p.file;
    set({ progress: { label: `Adding ${f.path}`, done: i, total } });
    try {
      if (p.existingId) {
        // A record naming an image already in the dataset (no file came with it).
        const rec = changed.get(p.existingId) ?? byId.get(p.existingId)!;
        const lab = labelsForImage(p.samples, { fileWidth: rec.origWidth, fileHeight: rec.origHeight, scale: rec.scale }, ds);
        problems.push(...lab.warnings.map((w) => `${f.path}: ${w}`));
        if (await mergeInto(rec.id, lab.labels)) labelled++;
        continue;
      }
      const type = f.type || f.blob?.type || 'image/png';
      let bytes: Uint8Array;
      try {
        bytes = await f.bytes();
      } catch (e) {
        problems.push(`${f.path}: skipped, could not be read (${(e as Error).message})`);
        continue;
      }
      const hash = await contentHash(bytes);
      const same = byHash.get(hash) ?? legacy.get(`${f.path}\u0000${f.size}`);
      if (same) {
        // The same image again: its labels (if any) go to the stored one; no second copy.
        const rec = changed.get(same) ?? byId.get(same)!;
        if (!p.samples.length) {
          duplicates++;
          continue;
        }
        const lab = labelsForImage(p.samples, { fileWidth: rec.origWidth, fileHeight: rec.origHeight, scale: rec.scale }, ds);
        problems.push(...lab.warnings.map((w) => `${f.path}: ${w}`));
        if (await mergeInto(rec.id, lab.labels)) labelled++;
        else duplicates++;
        continue;
      }
      let pi;
      try {
        const blob = f.blob ?? new Blob([bytes as BlobPart], { type });
        pi = await processImage(blob, type, bytes);
      } catch (e) {
        problems.push(`${f.path}: skipped, ${e instanceof ImageError ? e.reason : `could not be read (${(e as Error).message})`}`);
        continue;
      }
      if (pi.notice) details.push(`${f.path}: ${pi.notice}`);
      let origWidth = pi.origWidth;
      let origHeight = pi.origHeight;
      let scale = pi.scale;
      if (p.orig && pi.scale === 1) {
        // Re-import of our own export of a downscaled image: keep its original size.
        origWidth = p.orig.width;
        origHeight = p.orig.height;
        scale = origWidth / pi.width;
      }
      const lab = labelsForImage(p.samples, { fileWidth: pi.origWidth, fileHeight: pi.origHeight, scale: pi.scale }, ds);
      problems.push(...lab.warnings.map((w) => `${f.path}: ${w}`));
      let stop = false;
      for (let k = 0; k < lab.labels.length; k++) {
        const labels = lab.labels[k];
        const rec: ImageRecord = {
          id: uid('img'), datasetId: dsId, name: k === 0 ? f.path : `${f.path} #${k + 1}`, type: pi.type,
          width: pi.width, height: pi.height, origWidth, origHeight, scale, bytes: f.size, hash, ...(pi.storedHash ? { storedHash: pi.storedHash } : {}),
          order: ++order, addedAt: Date.now(), labels,
        };
        try {
          await db.addImage(rec, { id: rec.id, image: pi.stored, thumb: pi.thumb });
        } catch (e) {
          if (db.isQuotaError(e)) {
            problems.unshift(`Browser storage is full: "${f.path}" and the ${total - i - 1} files after it were not added (nothing was half-written). Delete images or datasets you no longer need, then add them again.`);
            stop = true;
            break;
          }
          problems.push(`${f.path}: could not be stored (${(e as Error).message})`);
          continue;
        }
        if (k === 0) {
          byHash.set(hash, rec.id);
          if (pi.storedHash) byHash.set(pi.storedHash, rec.id);
          byId.set(rec.id, rec);
        }
        added++;
        if (isLabelled(ds.kind, labels, ds.reward) || labels.boxes.length) labelled++;
        batch.push(rec);
      }
      if (stop) break;
    } catch (e) {
      if (db.isQuotaError(e)) {
        problems.unshift(`Browser storage is full: "${f.path}" and the ${total - i - 1} files after it were not added (nothing was half-written). Delete images or datasets you no longer need, then add them again.`);
        break;
      }
      problems.push(`${f.path}: could not be stored (${(e as Error).message})`);
    }
    if (performance.now() - lastFlush > 250) {
      flushBatch();
      lastFlush = performance.now();
    }
  }
  flushBatch();
  broadcast({ type: 'images', datasetId: dsId });

  // One summary notice: what was added, then every problem by file and line.
  const errs = plan.errors.map(formatError);
  const skipped = plan.skipped.map((s) => `${s.path}: skipped, ${s.reason}`);
  const all = [...problems, ...errs, ...skipped];
  if (duplicates) details.push(`${duplicates} image${duplicates > 1 ? 's were' : ' was'} already in the dataset (same content) and not added again.`);
  if (relabelled) details.push(`Labels added to ${relabelled} image${relabelled > 1 ? 's' : ''} already in the dataset.`);
  if (plan.records) details.push(`bbox_2d answers were read in ${FRAME_TITLES[frame as keyof typeof FRAME_TITLES] ?? frame} (the dataset's import setting; change it under Import…).`);
  details.push(...plan.warnings);
  const recs = plan.records ? `, ${labelled} with labels from ${plan.records} record${plan.records > 1 ? 's' : ''}` : '';
  const title = `Added ${added} image${added === 1 ? '' : 's'} to "${ds.name}"${recs}` + (all.length ? ` — ${all.length} problem${all.length > 1 ? 's' : ''}` : '');
  notify({ level: all.length ? (added || relabelled ? 'warn' : 'error') : 'success', title, details: [...all, ...details], ttl: all.length ? undefined : 5000 });
}

// ---------------------------------------------------------------- export

export async function exportCurrent(format: ExportFormat, withImages: boolean): Promise<{ blob: Blob; filename: string; warnings: string[] } | null> {
  const ds = currentDataset();
  if (!ds) return null;
  await flushWrites();
  const images = get().images;
  const ex = buildExport(ds, images, format);
  const base = ds.name.replace(/[^\w.-]+/g, '_') || 'dataset';
  if (!withImages && ex.files.length === 1) {
    const f = ex.files[0];
    return { blob: new Blob([f.text], { type: 'application/json' }), filename: `${base}-${f.path}`, warnings: ex.warnings };
  }
  const bytes = new Map<string, Uint8Array>();
  if (withImages) {
    set({ progress: { label: 'Packing images', done: 0, total: images.length } });
    try {
      for (let i = 0; i < images.length; i++) {
        const b = await db.getBlobs(images[i].id);
        if (b) bytes.set(ex.imagePaths.get(images[i].id)!, new Uint8Array(await b.image.arrayBuffer()));
        set({ progress: { label: 'Packing images', done: i + 1, total: images.length } });
      }
    } finally {
      set({ progress: null });
    }
  }
  const zip = zipDataset(ex.files, bytes);
  return { blob: new Blob([zip as BlobPart], { type: 'application/zip' }), filename: `${base}-${format}.zip`, warnings: ex.warnings };
}

/** Blob of a stored image (the labeler and the grid load them lazily). */
export async function imageBlobs(id: string): Promise<db.ImageBlobs | undefined> {
  return db.getBlobs(id);
}
