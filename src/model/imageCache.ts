// The vision tower's output per image content (LRU), so the frozen tower runs once per image while
// a run revisits its examples. Holds promises: concurrent callers for one image share one tower run.
import type { Tensor } from '../gpu/tensor.ts';

export interface ImageInput {
  /** [N, 3·tp·p·p] patchified pixels of all images of the sequence, concatenated */
  pixelValues: Float32Array;
  /** [n, 3] (t, gh, gw) per image */
  imageGridThw: Int32Array;
  /** optional cache key (e.g. a dataset image id); default: a hash of the pixels and grids */
  cacheKey?: string;
}

const MAX_CACHED_IMAGES = 32;

/** A cached vision output: the promise (concurrent callers share one tower run) and, once done, the tensor. */
interface CachedImage { p: Promise<Tensor>; t?: Tensor }

function releaseCached(e: CachedImage): void {
  if (e.t) e.t.release();
  else void e.p.then((t) => t.release(), () => undefined);
}

/** 64-bit content key of an image input (two 32-bit hashes over the raw words). */
function imageKey(img: ImageInput): string {
  if (img.cacheKey) return 'k:' + img.cacheKey;
  const u = new Uint32Array(img.pixelValues.buffer, img.pixelValues.byteOffset, img.pixelValues.length);
  let h1 = 0x811c9dc5, h2 = 0x9e3779b9 ^ u.length;
  for (let i = 0; i < u.length; i++) {
    h1 = Math.imul(h1 ^ u[i], 0x01000193);
    h2 = Math.imul(h2 ^ (u[i] + i), 0x85ebca6b) ^ (h2 >>> 13);
  }
  return `h:${(h1 >>> 0).toString(16)}${(h2 >>> 0).toString(16)}:${Array.from(img.imageGridThw).join(',')}`;
}

/** LRU of base vision outputs [M, H] by image content. The tensors are the cache's: callers never release them. */
export class ImageCache {
  private entries = new Map<string, CachedImage>();

  /** The cached output of `img`, or `run()`'s (then cached). A failed run is not kept. */
  get(img: ImageInput, run: () => Promise<Tensor>): Promise<Tensor> {
    const key = imageKey(img);
    let e = this.entries.get(key);
    if (e) this.entries.delete(key); // re-inserted below as the newest
    else {
      const entry: CachedImage = { p: run().then((t) => (entry.t = t)) };
      entry.p.catch(() => this.entries.get(key) === entry && this.entries.delete(key));
      e = entry;
    }
    this.entries.set(key, e);
    while (this.entries.size > MAX_CACHED_IMAGES) {
      const [k, old] = this.entries.entries().next().value!;
      this.entries.delete(k);
      releaseCached(old);
    }
    return e.p;
  }

  clear(): void {
    for (const e of this.entries.values()) releaseCached(e);
    this.entries.clear();
  }
}
