// A model is a Hugging Face folder. A ModelSource reads its files, whole or by byte range, from
// wherever it lives (hub, a folder the user picked, or memory); the loader never knows which.

export interface ModelSource {
  /** for messages: "hub Qwen/Qwen2.5-VL-3B-Instruct@main", "local folder my-model", "tiny model (seed 0)" */
  readonly id: string;
  /** file names relative to the folder root ("config.json", "model-00001-of-00002.safetensors") */
  list(): Promise<string[]>;
  /** size of a file in bytes; throws MissingFileError when absent */
  size(file: string): Promise<number>;
  /** a whole file; throws MissingFileError when absent */
  read(file: string): Promise<Uint8Array>;
  /** bytes [begin, end) of a file; throws when the file is shorter than `end` */
  readRange(file: string, begin: number, end: number): Promise<Uint8Array>;
}

export class MissingFileError extends Error {
  readonly code = 'ENOENT';
  constructor(readonly source: string, readonly file: string, detail = '') {
    super(`${source}: file "${file}" not found${detail ? ` (${detail})` : ''}`);
    this.name = 'MissingFileError';
  }
}

export class SourceError extends Error {
  constructor(source: string, file: string, what: string) {
    super(`${source}: ${file}: ${what}`);
    this.name = 'SourceError';
  }
}

/** Shard and config names are plain file names; anything else (paths, "..") is refused. */
export function checkFileName(source: string, file: string): void {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.\-]*(\/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$/.test(file) || file.split('/').some((p) => p === '..' || p === '.')) {
    throw new SourceError(source, file, 'is not an acceptable file name inside a model folder');
  }
}

export function checkRange(source: string, file: string, begin: number, end: number, size?: number): void {
  if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < begin) {
    throw new SourceError(source, file, `invalid byte range [${begin}, ${end})`);
  }
  if (size !== undefined && end > size) {
    throw new SourceError(source, file, `byte range [${begin}, ${end}) runs past the end of the ${size}-byte file (truncated?)`);
  }
}

/** Files held in memory (or produced on demand); the tiny model and tests use it. */
export function memorySource(files: Record<string, Uint8Array | (() => Promise<Uint8Array>)>, id = 'memory'): ModelSource {
  const done = new Map<string, Uint8Array>();
  const get = async (file: string): Promise<Uint8Array> => {
    const hit = done.get(file);
    if (hit) return hit;
    const f = files[file];
    if (f === undefined) throw new MissingFileError(id, file);
    const bytes = typeof f === 'function' ? await f() : f;
    done.set(file, bytes);
    return bytes;
  };
  return {
    id,
    list: async () => Object.keys(files).sort(),
    size: async (file) => (await get(file)).byteLength,
    read: get,
    readRange: async (file, begin, end) => {
      const b = await get(file);
      checkRange(id, file, begin, end, b.byteLength);
      return b.subarray(begin, end);
    },
  };
}
