// Files on disk for the Node front end, written so that nothing saved is ever lost:
//   fileKV(dir)                 the checkpoint store (the KV of src/train/checkpoint.ts) as one file
//                               per key, each written to a temp name, fsynced, then renamed;
//   writeFilesAtomic(dir, files) the adapter export: config and tensors replaced together;
//   writeFolderAtomic(dir, fill) the same for a folder written as streams (the merged model).
// A kill at any moment or a full disk (ENOSPC) leaves the previous files intact. Node-only (node:fs).
import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, readlink, rename, rm, symlink, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { deserialize, serialize } from 'node:v8';
import type { KV } from '../train/checkpoint.ts';

/** Writes `bytes` to a new file at `path` and makes them durable (tests inject failures here). */
export type FileWriter = (path: string, bytes: Uint8Array) => Promise<void>;

/** A new file at `path` from a stream of chunks, fsynced (the merged model's shards: never held whole). */
export async function writeStreamDurable(path: string, chunks: AsyncIterable<Uint8Array>): Promise<number> {
  if (!PLAIN.test(basename(path))) throw new Error(`writeStreamDurable: "${basename(path)}" is not a plain file name`);
  const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
  let total = 0;
  try {
    for await (const bytes of chunks) {
      let off = 0;
      while (off < bytes.byteLength) off += (await fh.write(bytes, off, bytes.byteLength - off)).bytesWritten;
      total += bytes.byteLength;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  return total;
}

export const writeDurable: FileWriter = async (path, bytes) => {
  const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
  try {
    let off = 0;
    while (off < bytes.byteLength) off += (await fh.write(bytes, off, bytes.byteLength - off)).bytesWritten;
    await fh.sync();
  } finally {
    await fh.close();
  }
};

/** fsync a directory so a rename in it survives a power cut (not possible on Windows: skipped). */
async function syncDir(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // EISDIR / EPERM on platforms that cannot fsync a directory
  } finally {
    await fh?.close();
  }
}

const rand = () => `${process.pid}.${Math.random().toString(36).slice(2, 10)}`;
const TMP = /\.(\d+)\.[a-z0-9]+\.tmp$/;

function alive(pid: number): boolean {
  if (pid === process.pid) return false; // at start-up nothing of ours is in flight
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface FileKV extends KV {
  readonly dir: string;
  /** Delete temp files left by killed writers (their process is gone). Returns their names. */
  sweep(): Promise<string[]>;
}

/**
 * The checkpoint store as files in `dir` (created on the first write). Byte values (checkpoints)
 * are stored raw after a tag byte, so the checkpoint's own length and CRC32 judge a damaged file;
 * other values (the `latest` pointer) go through v8 serialization.
 */
export function fileKV(dir: string, write: FileWriter = writeDurable): FileKV {
  const path = (k: string) => join(dir, encodeURIComponent(k));
  return {
    dir,
    async get<T>(k: string) {
      let b: Buffer;
      try {
        b = await readFile(path(k));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw e;
      }
      if (b[0] === 1) return new Uint8Array(b.buffer, b.byteOffset + 1, b.byteLength - 1) as T;
      if (b[0] === 0) return deserialize(b.subarray(1)) as T;
      throw new Error(`${path(k)}: unknown value tag ${b[0]} (damaged file?)`);
    },
    async set(k, v) {
      await mkdir(dir, { recursive: true });
      const body = v instanceof Uint8Array ? v : serialize(v);
      const bytes = new Uint8Array(body.byteLength + 1);
      bytes[0] = v instanceof Uint8Array ? 1 : 0;
      bytes.set(body, 1);
      const tmp = `${path(k)}.${rand()}.tmp`;
      try {
        await write(tmp, bytes);
        await rename(tmp, path(k));
      } catch (e) {
        await rm(tmp, { force: true });
        throw e;
      }
      await syncDir(dir);
    },
    async del(k) {
      await rm(path(k), { force: true });
    },
    async keys() {
      try {
        return (await readdir(dir)).filter((f) => !f.endsWith('.tmp')).map(decodeURIComponent);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw e;
      }
    },
    async sweep() {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch {
        return [];
      }
      const stale = names.filter((f) => {
        const m = TMP.exec(f);
        return m && !alive(Number(m[1]));
      });
      for (const f of stale) await rm(join(dir, f), { force: true });
      return stale;
    },
  };
}

// ---------------------------------------------------------------- atomic folder of files

/**
 * Replace the files of folder `dir` (e.g. adapter_config.json + adapter_model.safetensors) all at
 * once. `dir` becomes a symbolic link to a hidden sibling version folder `.<name>.v-…`: the new
 * version is written there in full (each file fsynced, then the folder), a new link is made under
 * a temp name and renamed over `dir` — one rename(2), atomic on POSIX — and only then is the
 * previous version deleted. A reader (peft, our loader) sees the old pair or the new pair, never a
 * mix, and never a torn file; a kill or ENOSPC before the rename leaves the previous version as it
 * was (the half-written version folder is removed now or swept by the next call).
 * Why a folder swap and not per-file renames: two renames are two moments, and a kill between them
 * pairs new tensors with an old config. A real folder at `dir` (an export from an older build) is
 * moved to a version folder first — only when it holds nothing but plain files, so nothing else
 * (e.g. checkpoints) is ever swept with an old version.
 */
export async function writeFilesAtomic(dir: string, files: { name: string; bytes: Uint8Array }[], write: FileWriter = writeDurable): Promise<void> {
  for (const f of files) if (!PLAIN.test(f.name)) throw new Error(`writeFilesAtomic: "${f.name}" is not a plain file name`);
  await writeFolderAtomic(dir, async (vdir) => {
    for (const f of files) await write(join(vdir, f.name), f.bytes);
  });
}

const PLAIN = /^[A-Za-z0-9_][A-Za-z0-9_.\-]*$/;

/**
 * writeFilesAtomic for files too big to hold: `fill(vdir)` writes the new version's files into the
 * fresh folder `vdir` (each made durable by the caller, e.g. with writeStreamDurable); the folder
 * swap is the same. A throw from `fill` removes the half-written version and keeps the old one.
 */
export async function writeFolderAtomic(dir: string, fill: (vdir: string) => Promise<void>): Promise<void> {
  dir = resolve(dir);
  const parent = dirname(dir), base = basename(dir);
  await mkdir(parent, { recursive: true });
  const prefix = `.${base}.v-`;
  let current = await currentVersion(dir);
  if (current === undefined) {
    // killed between adopting a real folder and linking it: link it back (it is complete)
    const adopted = (await readdir(parent)).filter((n) => n.startsWith(`${prefix}a-`)).sort().pop();
    if (adopted) {
      await linkSwap(parent, base, adopted);
      current = adopted;
    }
  }
  if (current === null) {
    // a real folder: adopt it as a version, if it is only files
    const entries = await readdir(dir, { withFileTypes: true });
    const foreign = entries.filter((e) => !e.isFile()).map((e) => e.name);
    if (foreign.length) throw new Error(`${dir} is a folder holding ${foreign.join(', ')} besides files: write the adapter to a folder of its own so an update can replace it atomically`);
    const adopted = `${prefix}a-${Date.now().toString(36)}-${rand()}`;
    await rename(dir, join(parent, adopted));
    await linkSwap(parent, base, adopted);
    current = adopted;
  }
  // versions left by killed writers (never linked) go now
  for (const n of await readdir(parent)) if (n.startsWith(prefix) && n !== current) await rm(join(parent, n), { recursive: true, force: true });
  for (const n of await readdir(parent)) if (n.startsWith(`.${base}.link-`)) await rm(join(parent, n), { force: true });

  const version = `${prefix}${Date.now().toString(36)}-${rand()}`;
  const vdir = join(parent, version);
  try {
    await mkdir(vdir);
    await fill(vdir);
    await syncDir(vdir);
  } catch (e) {
    await rm(vdir, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  }
  await linkSwap(parent, base, version);
  if (current) await rm(join(parent, current), { recursive: true, force: true });
}

/** The version folder `dir` links to; undefined when `dir` does not exist; null for a real folder. */
async function currentVersion(dir: string): Promise<string | undefined | null> {
  let st;
  try {
    st = await lstat(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  if (st.isSymbolicLink()) return basename(await readlink(dir));
  if (st.isDirectory()) return null;
  throw new Error(`${dir} exists and is not a folder`);
}

async function linkSwap(parent: string, base: string, target: string): Promise<void> {
  const tmp = join(parent, `.${base}.link-${rand()}`);
  await symlink(target, tmp, 'dir'); // relative: the pair moves with its parent folder
  try {
    await rename(tmp, join(parent, base));
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await syncDir(parent);
}
