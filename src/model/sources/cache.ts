// Byte caches for downloaded model bytes, keyed by URL (plus the byte range). The Cache API in
// browsers and workers; a directory in Node (./nodeCache.ts, kept apart so the browser bundle never
// sees node:fs); memory for tests.

export interface ByteCache {
  get(key: string): Promise<Uint8Array | undefined>;
  put(key: string, bytes: Uint8Array): Promise<void>;
}

/**
 * Cache API store. Keys must be URLs; ranged entries use a query parameter because the Cache API
 * refuses 206 responses and ignores fragments when matching.
 */
export function cacheApiStore(name = 'patchwork-models', store: CacheStorage | undefined = (globalThis as { caches?: CacheStorage }).caches): ByteCache {
  if (!store) throw new Error('the Cache API is not available here (Node has none: use dirCache from src/model/sources/nodeCache.ts)');
  let open: Promise<Cache> | undefined;
  const cache = () => (open ??= store.open(name));
  return {
    async get(key) {
      const r = await (await cache()).match(key);
      return r ? new Uint8Array(await r.arrayBuffer()) : undefined;
    },
    async put(key, bytes) {
      const body = bytes.slice().buffer as ArrayBuffer;
      await (await cache()).put(key, new Response(body, { status: 200, headers: { 'content-type': 'application/octet-stream', 'content-length': String(bytes.byteLength) } }));
    },
  };
}

export function memoryCache(): ByteCache & { map: Map<string, Uint8Array> } {
  const map = new Map<string, Uint8Array>();
  return {
    map,
    get: async (k) => map.get(k),
    put: async (k, b) => void map.set(k, b.slice()),
  };
}

/** The default cache: the Cache API where it exists, none otherwise (Node callers pass dirCache). */
export function defaultCache(): ByteCache | null {
  return (globalThis as { caches?: CacheStorage }).caches ? cacheApiStore() : null;
}
