// The hub source's failures, each against a real local HTTP server (no mocked fetch): an endpoint that
// refuses connections or never answers, gated/private repos, a missing repo / revision / file (with
// huggingface.co's x-error-code headers and without, as a plain mirror answers), rate limits, 5xx.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HubError, hubSource } from './hub.ts';
import { MissingFileError } from './source.ts';
import { serveModelFolders, writeFiles, type ModelServer } from './node.ts';
import { loadModel } from '../weights.ts';
import { tinyFiles } from '../tiny.ts';

const SMALL = { seed: 7, vocabSize: 1000, tieWordEmbeddings: true };

/** A server answering every request with `handler`; returns its endpoint. */
async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ endpoint: string; close(): Promise<void> }> {
  const server = createServer(handler);
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as { port: number };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((ok) => { server.closeAllConnections(); server.close(() => ok()); }),
  };
}

/** The error a promise rejects with (fails the test when it resolves). */
async function failure<E = HubError>(p: Promise<unknown>): Promise<E> {
  try {
    await p;
  } catch (e) {
    return e as E;
  }
  throw new Error('expected a rejection');
}

/** A port nothing listens on: bind one, then close it. */
async function closedPort(): Promise<number> {
  const s = await serve(() => {});
  const port = Number(new URL(s.endpoint).port);
  await s.close();
  return port;
}

/**
 * huggingface.co's answers for one repo "patchwork/tiny" with revision "main": an unknown repo is 401
 * RepoNotFound (the hub does not say whether a private one exists), an unknown revision 404
 * RevisionNotFound, an unknown file 404 EntryNotFound. `headers: false` is a plain mirror: bare 404s,
 * and the revision API answers 404 for an unknown repo or revision.
 */
function hubLike(files: Record<string, Uint8Array>, headers = true) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const no = (status: number, code: string) => {
      res.writeHead(status, headers ? { 'x-error-code': code, 'x-error-message': code } : {});
      res.end(code);
    };
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(path);
    const m = api ?? /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (!m) return no(404, 'EntryNotFound');
    if (m[1] !== 'patchwork/tiny') return no(headers ? 401 : 404, 'RepoNotFound');
    if (m[2] !== 'main') return no(404, 'RevisionNotFound');
    if (api) {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ siblings: Object.keys(files).map((rfilename) => ({ rfilename })) }));
    }
    const f = files[m[3]];
    if (!f) return no(404, 'EntryNotFound');
    res.writeHead(200, { 'content-length': String(f.byteLength) });
    res.end(f);
  };
}

describe('hub source failures name the endpoint and what to do', () => {
  const files = { 'config.json': tinyFiles(SMALL)['config.json'] };
  let hf: Awaited<ReturnType<typeof serve>>, mirror: Awaited<ReturnType<typeof serve>>;
  beforeAll(async () => {
    hf = await serve(hubLike(files));
    mirror = await serve(hubLike(files, false));
  });
  afterAll(async () => {
    await hf.close();
    await mirror.close();
  });

  it('an endpoint that refuses connections is unreachable, not "fetch failed"', async () => {
    const port = await closedPort();
    const src = hubSource('patchwork/tiny', { endpoint: `http://127.0.0.1:${port}`, cache: null });
    const e = await failure(src.read('config.json'));
    expect(e).toBeInstanceOf(HubError);
    expect(e.status).toBeUndefined();
    expect(e.message).toMatch(new RegExp(`^Could not reach http://127\\.0\\.0\\.1:${port} \\(patchwork/tiny/config\\.json\\): the endpoint is unreachable from this machine \\(ECONNREFUSED.*\\) — check the network or set a mirror endpoint$`));
    // the loader passes it through unchanged (it is not a missing file)
    await expect(loadModel(src)).rejects.toThrow(/^Could not reach .*patchwork\/tiny\/config\.json\): the endpoint is unreachable/);
    // a revision other than main is named too
    await expect(hubSource('patchwork/tiny', { endpoint: `http://127.0.0.1:${port}`, revision: 'v2', cache: null }).readRange('model.safetensors', 0, 8)).rejects.toThrow(
      /Could not reach http:\/\/127\.0\.0\.1:\d+ \(patchwork\/tiny@v2\/model\.safetensors\)/,
    );
  });

  it('a server that never answers times out as unreachable', async () => {
    const hung = await serve(() => {}); // accepts, never responds
    try {
      const src = hubSource('patchwork/tiny', { endpoint: hung.endpoint, cache: null, timeoutMs: 300 });
      await expect(src.read('config.json')).rejects.toThrow(/^Could not reach http:\/\/127\.0\.0\.1:\d+ \(patchwork\/tiny\/config\.json\): the endpoint is unreachable from this machine \(no answer within 300 ms\)/);
    } finally {
      await hung.close();
    }
  });

  it('401 / 403: gated or private, needs a token (or the token was refused)', async () => {
    for (const status of [401, 403]) {
      const gated = await serve((_q, r) => r.writeHead(status, { 'x-error-code': 'GatedRepo' }).end('gated'));
      try {
        const e = await failure(hubSource('patchwork/tiny', { endpoint: gated.endpoint, cache: null }).read('config.json'));
        expect(e).toBeInstanceOf(HubError);
        expect(e.status).toBe(status);
        expect(e.message).toBe(`hub patchwork/tiny@main: config.json: HTTP ${status}: the repo is gated or private; pass an access token (${gated.endpoint})`);
        await expect(hubSource('patchwork/tiny', { endpoint: gated.endpoint, cache: null, token: 'hf_x' }).read('config.json')).rejects.toThrow(/HTTP \d+: the repo is gated or private and the token was refused/);
      } finally {
        await gated.close();
      }
    }
  });

  it('404: names the missing repo, revision or file (huggingface.co headers)', async () => {
    const repo = hubSource('patchwork/nope', { endpoint: hf.endpoint, cache: null });
    await expect(loadModel(repo)).rejects.toThrow(`hub patchwork/nope@main: config.json: HTTP 401: ${hf.endpoint} has no repository "patchwork/nope": check the model id (a private repo needs an access token)`);
    const rev = hubSource('patchwork/tiny', { endpoint: hf.endpoint, revision: 'v9', cache: null });
    await expect(loadModel(rev)).rejects.toThrow(`hub patchwork/tiny@v9: config.json: HTTP 404: repository "patchwork/tiny" on ${hf.endpoint} has no revision "v9": check the branch, tag or commit`);
    const file = hubSource('patchwork/tiny', { endpoint: hf.endpoint, cache: null });
    const e = await failure<Error>(file.read('tokenizer.json'));
    expect(e).toBeInstanceOf(MissingFileError); // the loader treats a missing optional file as absent
    expect(e.message).toBe(`hub patchwork/tiny@main: file "tokenizer.json" not found (HTTP 404 from ${hf.endpoint})`);
    // the repo exists and has config.json but no weights: the loader says which files are missing
    await expect(loadModel(file)).rejects.toThrow(/neither model\.safetensors nor model\.safetensors\.index\.json is in the model folder/);
  });

  it('404 from a plain mirror (no x-error-code): asks the revision API which part is missing', async () => {
    await expect(hubSource('patchwork/nope', { endpoint: mirror.endpoint, cache: null }).read('config.json')).rejects.toThrow(
      `hub patchwork/nope@main: config.json: HTTP 404: ${mirror.endpoint} has no repository "patchwork/nope" at revision "main": check the model id and the revision`,
    );
    await expect(hubSource('patchwork/tiny', { endpoint: mirror.endpoint, cache: null }).read('tokenizer.json')).rejects.toBeInstanceOf(MissingFileError);
  });

  it('429 and 5xx say to retry', async () => {
    const limited = await serve((_q, r) => r.writeHead(429, { 'retry-after': '17' }).end());
    const broken = await serve((_q, r) => r.writeHead(503, 'Service Unavailable').end());
    try {
      await expect(hubSource('patchwork/tiny', { endpoint: limited.endpoint, cache: null }).read('config.json')).rejects.toThrow(
        `hub patchwork/tiny@main: config.json: HTTP 429: ${limited.endpoint} is rate-limiting requests; retry in 17 s (an access token gets a higher limit)`,
      );
      const e = await failure(hubSource('patchwork/tiny', { endpoint: broken.endpoint, cache: null }).readRange('model.safetensors', 0, 8));
      expect(e.status).toBe(503);
      expect(e.message).toBe(`hub patchwork/tiny@main: model.safetensors: HTTP 503 Service Unavailable: ${broken.endpoint} failed on its side; retry later or set a mirror endpoint`);
      await expect(hubSource('patchwork/tiny', { endpoint: broken.endpoint, cache: null }).list()).rejects.toThrow(/\(file list\): HTTP 503/);
    } finally {
      await limited.close();
      await broken.close();
    }
  });
});

describe('hub source still loads', () => {
  let dir: string, server: ModelServer;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pw-hubsrc-'));
    await writeFiles(join(dir, 'patchwork/single'), tinyFiles(SMALL));
    server = await serveModelFolders(dir);
  });
  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });
  it('a single-file model through the timeout-guarded fetch (the missing index.json is a plain 404)', async () => {
    const m = await loadModel(hubSource('patchwork/single', { endpoint: server.endpoint, cache: null, timeoutMs: 10_000 }));
    expect(Object.keys(m.weights).length).toBeGreaterThan(10);
  });
});
