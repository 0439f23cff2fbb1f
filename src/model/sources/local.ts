// A local model folder the user picked or dropped: a list of File objects read with File.slice,
// so a 7 GB checkpoint is never held in memory whole. Built on Blob so Node tests pass Blobs.
import { checkRange, MissingFileError, SourceError, type ModelSource } from './source.ts';

export type LocalEntry = File | { name: string; blob: Blob };

/**
 * Path of an entry inside the folder. A picked directory gives `webkitRelativePath`
 * "folder/config.json": the first segment (the folder itself) is dropped.
 */
function entryPath(e: LocalEntry): string {
  if ('blob' in e) return e.name;
  const rel = (e as File & { webkitRelativePath?: string }).webkitRelativePath;
  if (rel && rel.includes('/')) return rel.split('/').slice(1).join('/');
  return e.name;
}

export function localSource(entries: Iterable<LocalEntry>, id = 'local folder'): ModelSource {
  const files = new Map<string, Blob>();
  for (const e of entries) {
    const path = entryPath(e);
    if (files.has(path)) throw new SourceError(id, path, 'appears twice in the dropped files');
    files.set(path, 'blob' in e ? e.blob : e);
  }
  const blob = (file: string): Blob => {
    const b = files.get(file);
    if (!b) throw new MissingFileError(id, file, `the folder has ${[...files.keys()].sort().join(', ') || 'no files'}`);
    return b;
  };
  return {
    id,
    list: async () => [...files.keys()].sort(),
    size: async (file) => blob(file).size,
    read: async (file) => new Uint8Array(await blob(file).arrayBuffer()),
    readRange: async (file, begin, end) => {
      const b = blob(file);
      checkRange(id, file, begin, end, b.size);
      return new Uint8Array(await b.slice(begin, end).arrayBuffer());
    },
  };
}
