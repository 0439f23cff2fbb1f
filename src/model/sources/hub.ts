// Hugging Face hub (or a mirror): files at `<endpoint>/<repo>/resolve/<revision>/<file>`, read with
// HTTP Range requests so the loader can fetch the 8-byte length, the header, then tensor by tensor.
// Every response is cached (whole files by URL, ranges by URL + range), so a second load of the same
// revision downloads nothing. Pin `revision` to a commit hash for a cache that can never go stale.
import type { ByteCache } from './cache.ts';
import { defaultCache } from './cache.ts';
import { checkFileName, checkRange, MissingFileError, SourceError, type ModelSource } from './source.ts';

export interface HubOptions {
  /** default https://huggingface.co */
  endpoint?: string;
  /** branch, tag or commit; default "main" */
  revision?: string;
  /** default: the Cache API where available, else no cache; pass dirCache(...) in Node */
  cache?: ByteCache | null;
  /** access token for gated or private repos */
  token?: string;
  fetch?: typeof fetch;
  /** ms to wait for a response's headers before calling the endpoint unreachable; default 30000 */
  timeoutMs?: number;
  /** called after every response with the bytes that came over the network (0 for cache hits) */
  onBytes?: (file: string, networkBytes: number, cachedBytes: number) => void;
}

export interface HubStats {
  requests: number;
  networkBytes: number;
  cacheHits: number;
  cachedBytes: number;
}

/**
 * An answer from the endpoint that is not the file (`status` is the HTTP status), or no answer at all
 * (`status` absent; the message then starts "Could not reach <endpoint> (<repo>/<file>)"). Either way
 * the message names the endpoint, the repo and file, what went wrong and what to do.
 */
export class HubError extends SourceError {
  constructor(source: string, file: string, what: string, readonly status?: number, whole?: string) {
    super(source, file, what);
    if (whole) this.message = whole;
    this.name = 'HubError';
  }
}

// the Node CLI says "this machine", the studio "this browser"
const HERE = (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node ? 'this machine' : 'this browser';

export type HubSource = ModelSource & { readonly stats: HubStats; url(file: string): string };

export function hubSource(repo: string, opts: HubOptions = {}): HubSource {
  if (!/^[A-Za-z0-9][\w.\-]*(\/[\w.\-]+)?$/.test(repo) || repo.includes('..')) {
    throw new Error(`"${repo}" is not a hub repo id (expected "owner/name")`);
  }
  const endpoint = (opts.endpoint ?? 'https://huggingface.co').replace(/\/+$/, '');
  const revision = opts.revision ?? 'main';
  const cache = opts.cache === undefined ? defaultCache() : opts.cache;
  const rawFetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const id = `hub ${repo}@${revision}`;
  const stats: HubStats = { requests: 0, networkBytes: 0, cacheHits: 0, cachedBytes: 0 };
  const sizes = new Map<string, number>();

  const url = (file: string) => {
    checkFileName(id, file);
    return `${endpoint}/${repo}/resolve/${encodeURIComponent(revision)}/${file.split('/').map(encodeURIComponent).join('/')}`;
  };
  const headers = (extra: Record<string, string> = {}) => ({ ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}), ...extra });

  const where = (file: string) => `${endpoint} (${repo}${revision === 'main' ? '' : `@${revision}`}/${file})`;
  let answered = false; // a file came back: repo and revision exist, so a later 404 is that file's

  /**
   * fetch that names the endpoint when it cannot be reached: a refused connection, DNS, CORS and an
   * offline browser all surface as a bare TypeError ("Failed to fetch"), a hung server as no answer.
   * The timeout covers the wait for the response's headers, not the download of its body.
   */
  const doFetch = async (file: string, u: string, init: RequestInit): Promise<Response> => {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    try {
      return await rawFetch(u, { ...init, signal: ctl.signal });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      const detail = ctl.signal.aborted ? `no answer within ${timeoutMs < 1000 ? `${timeoutMs} ms` : `${Math.round(timeoutMs / 1000)} s`}` : [cause?.code ?? cause?.message, (e as Error).message].filter(Boolean).join(': ');
      const what = `the endpoint is unreachable from ${HERE} (${detail}) — check the network or set a mirror endpoint`;
      throw new HubError(id, file, what, undefined, `Could not reach ${where(file)}: ${what}`);
    } finally {
      clearTimeout(timer);
    }
  };

  const fail = async (file: string, r: Response): Promise<never> => {
    // huggingface.co says which part is missing in x-error-code (it answers 401 for a repo it will not admit exists)
    const code = r.headers.get('x-error-code');
    const s = r.status;
    const repoMissing = () => new HubError(id, file, `HTTP ${s}: ${endpoint} has no repository "${repo}": check the model id${opts.token ? '' : ' (a private repo needs an access token)'}`, s);
    const revMissing = () => new HubError(id, file, `HTTP ${s}: repository "${repo}" on ${endpoint} has no revision "${revision}": check the branch, tag or commit`, s);
    if (code === 'RepoNotFound') throw repoMissing();
    if (code === 'RevisionNotFound') throw revMissing();
    if (code === 'GatedRepo' || ((s === 401 || s === 403) && code !== 'EntryNotFound')) {
      throw new HubError(id, file, `HTTP ${s}: the repo is gated or private${opts.token ? ' and the token was refused (does it have read access, and were the repo\'s terms accepted?)' : '; pass an access token'} (${endpoint})`, s);
    }
    if (s === 404) {
      if (!code && !answered) {
        // a mirror without x-error-code: ask the revision's file list whether repo or revision exist
        const probe = await rawFetch(`${endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}`, { headers: headers(), signal: AbortSignal.timeout(timeoutMs) }).catch(() => undefined);
        const pc = probe?.headers.get('x-error-code');
        if (pc === 'RepoNotFound') throw repoMissing();
        if (pc === 'RevisionNotFound') throw revMissing();
        if (probe?.status === 404) throw new HubError(id, file, `HTTP 404: ${endpoint} has no repository "${repo}" at revision "${revision}": check the model id and the revision`, 404);
      }
      throw new MissingFileError(id, file, `HTTP 404 from ${endpoint}`);
    }
    if (s === 429) {
      const after = r.headers.get('retry-after');
      throw new HubError(id, file, `HTTP 429: ${endpoint} is rate-limiting requests; retry ${after ? `in ${after} s` : 'in a minute'}${opts.token ? '' : ' (an access token gets a higher limit)'}`, s);
    }
    if (s >= 500) throw new HubError(id, file, `HTTP ${s}${r.statusText ? ` ${r.statusText}` : ''}: ${endpoint} failed on its side; retry later or set a mirror endpoint`, s);
    throw new HubError(id, file, `HTTP ${s} ${r.statusText} from ${endpoint}`, s);
  };

  const fromCache = async (file: string, key: string): Promise<Uint8Array | undefined> => {
    const hit = cache ? await cache.get(key) : undefined;
    if (hit) {
      stats.cacheHits++;
      stats.cachedBytes += hit.byteLength;
      opts.onBytes?.(file, 0, hit.byteLength);
    }
    return hit;
  };
  const toCache = async (key: string, bytes: Uint8Array) => {
    if (cache) await cache.put(key, bytes);
  };
  const sizeKey = (file: string) => `${url(file)}?patchwork-size`;
  const rememberSize = async (file: string, n: number) => {
    if (sizes.get(file) === n) return;
    sizes.set(file, n);
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, n, true);
    await toCache(sizeKey(file), b);
  };

  const read = async (file: string): Promise<Uint8Array> => {
    const u = url(file);
    const hit = await fromCache(file, u);
    if (hit) return hit;
    // a remembered 404 (e.g. the index.json of a single-file model): a cached load makes no request
    if (cache && (await cache.get(`${u}?patchwork-missing`))) throw new MissingFileError(id, file, 'cached 404');
    stats.requests++;
    const r = await doFetch(file, u, { headers: headers() });
    if (r.status === 404 && (answered || r.headers.get('x-error-code') === 'EntryNotFound')) await toCache(`${u}?patchwork-missing`, new Uint8Array([1]));
    if (!r.ok) await fail(file, r);
    answered = true;
    const bytes = new Uint8Array(await r.arrayBuffer());
    stats.networkBytes += bytes.byteLength;
    opts.onBytes?.(file, bytes.byteLength, 0);
    await toCache(u, bytes);
    await rememberSize(file, bytes.byteLength);
    return bytes;
  };

  const readRange = async (file: string, begin: number, end: number): Promise<Uint8Array> => {
    checkRange(id, file, begin, end, sizes.get(file));
    if (end === begin) return new Uint8Array(0);
    const u = url(file);
    const key = `${u}?patchwork-bytes=${begin}-${end - 1}`;
    const hit = await fromCache(file, key);
    if (hit) return hit;
    stats.requests++;
    const r = await doFetch(file, u, { headers: headers({ range: `bytes=${begin}-${end - 1}` }) });
    if (r.status === 416) throw new SourceError(id, file, `byte range [${begin}, ${end}) is outside the file (HTTP 416; truncated?)`);
    if (!r.ok) await fail(file, r);
    answered = true;
    let bytes = new Uint8Array(await r.arrayBuffer());
    stats.networkBytes += bytes.byteLength;
    opts.onBytes?.(file, bytes.byteLength, 0);
    if (r.status === 206) {
      const cr = /bytes (\d+)-(\d+)\/(\d+|\*)/.exec(r.headers.get('content-range') ?? '');
      if (cr) {
        if (Number(cr[1]) !== begin) throw new SourceError(id, file, `server answered range ${cr[0]} for a request starting at ${begin}`);
        if (cr[3] !== '*') await rememberSize(file, Number(cr[3]));
      }
    } else {
      // the server ignored Range and sent the whole file: keep it whole in the cache too
      await rememberSize(file, bytes.byteLength);
      await toCache(u, bytes);
      bytes = bytes.slice(begin, end);
    }
    if (bytes.byteLength !== end - begin) {
      throw new SourceError(id, file, `expected ${end - begin} bytes at offset ${begin}, got ${bytes.byteLength} (file truncated?)`);
    }
    await toCache(key, bytes);
    return bytes;
  };

  const size = async (file: string): Promise<number> => {
    const known = sizes.get(file);
    if (known !== undefined) return known;
    const c = cache ? await cache.get(sizeKey(file)) : undefined;
    if (c && c.byteLength === 8) {
      const n = new DataView(c.buffer, c.byteOffset, 8).getFloat64(0, true);
      sizes.set(file, n);
      return n;
    }
    // the first 8 bytes (the header length the loader reads next) also report the total size
    try {
      await readRange(file, 0, 8);
    } catch (e) {
      if (!(e instanceof SourceError && sizes.has(file))) throw e; // shorter than 8 bytes: the size is known
    }
    const n = sizes.get(file);
    if (n === undefined) throw new SourceError(id, file, 'server reported no file size (no Content-Range)');
    return n;
  };

  const list = async (): Promise<string[]> => {
    const u = `${endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}`;
    stats.requests++;
    const r = await doFetch('(file list)', u, { headers: headers() });
    if (!r.ok) await fail('(file list)', r);
    const j = (await r.json()) as { siblings?: { rfilename: string }[] };
    return (j.siblings ?? []).map((s) => s.rfilename).sort();
  };

  return { id, stats, url, list, size, read, readRange };
}
