// Getting files from the browser into SourceFiles: drops (files and whole folders through
// webkitGetAsEntry), <input type=file> (with or without webkitdirectory) and clipboard pastes.

import type { SourceFile } from '../../data/formats/import.ts';
import { mimeOf } from '../../data/formats/types.ts';

export function fileToSource(f: File, path?: string): SourceFile {
  const p = (path ?? (f.webkitRelativePath || f.name)).replace(/^\/+/, '');
  return { path: p, size: f.size, type: f.type || mimeOf(p), blob: f, bytes: async () => new Uint8Array(await f.arrayBuffer()) };
}

export function filesFromList(list: FileList | File[] | null | undefined): SourceFile[] {
  return list ? Array.from(list).map((f) => fileToSource(f)) : [];
}

function readAll(dir: FileSystemDirectoryEntry): Promise<FileSystemEntry[]> {
  // readEntries returns batches (about 100 at a time) until an empty one.
  const reader = dir.createReader();
  const out: FileSystemEntry[] = [];
  return new Promise((resolve, reject) => {
    const next = () =>
      reader.readEntries((batch) => {
        if (!batch.length) return resolve(out);
        out.push(...batch);
        next();
      }, reject);
    next();
  });
}

function entryFile(e: FileSystemFileEntry): Promise<File> {
  return new Promise((resolve, reject) => e.file(resolve, reject));
}

async function walk(e: FileSystemEntry, out: SourceFile[], problems: string[]): Promise<void> {
  try {
    if (e.isFile) out.push(fileToSource(await entryFile(e as FileSystemFileEntry), e.fullPath));
    else if (e.isDirectory) for (const c of await readAll(e as FileSystemDirectoryEntry)) await walk(c, out, problems);
  } catch (err) {
    problems.push(`${e.fullPath}: could not be read (${(err as Error).message})`);
  }
}

/**
 * Files of a drop, folders walked recursively. The DataTransfer is only readable during the
 * event, so entries and files are taken synchronously before anything is awaited.
 */
export function collectDrop(dt: DataTransfer): Promise<{ files: SourceFile[]; problems: string[] }> {
  const items = Array.from(dt.items ?? []).filter((i) => i.kind === 'file');
  const entries = items.map((i) => (typeof i.webkitGetAsEntry === 'function' ? i.webkitGetAsEntry() : null));
  const plain = items.map((i) => i.getAsFile());
  const fallback = items.length ? [] : Array.from(dt.files ?? []);
  return (async () => {
    const files: SourceFile[] = [];
    const problems: string[] = [];
    for (let k = 0; k < items.length; k++) {
      const e = entries[k];
      const f = plain[k];
      if (e?.isDirectory) await walk(e, files, problems);
      else if (f) files.push(fileToSource(f, e?.fullPath || f.name));
      else if (e) await walk(e, files, problems);
    }
    for (const f of fallback) files.push(fileToSource(f));
    return { files, problems };
  })();
}

/** Image files on the clipboard, named by time (clipboard images are all called image.png). */
export function collectPaste(dt: DataTransfer | null): SourceFile[] {
  if (!dt) return [];
  const files = Array.from(dt.files ?? []);
  const fromItems = files.length ? [] : Array.from(dt.items ?? []).filter((i) => i.kind === 'file').map((i) => i.getAsFile()).filter((f): f is File => !!f);
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return [...files, ...fromItems].map((f, i) => {
    const ext = /\.[^.]+$/.exec(f.name)?.[0] ?? `.${(f.type.split('/')[1] || 'png').replace('jpeg', 'jpg')}`;
    const generic = /^image\.\w+$/i.test(f.name) || !f.name;
    return fileToSource(f, generic ? `pasted-${stamp}${i ? `-${i + 1}` : ''}${ext}` : f.name);
  });
}

export function hasFiles(dt: DataTransfer | null): boolean {
  return !!dt && Array.from(dt.types ?? []).includes('Files');
}
