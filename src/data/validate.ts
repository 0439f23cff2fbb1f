// Checks of a dataset record against its images' sizes, before any step: each image is a size
// Qwen2.5-VL's smart_resize accepts, and every box is 4 finite numbers with x1 < x2, y1 < y2,
// inside the image in the frame it is written in (the resized frame for bbox_2d answers, the
// original pixels for ms-swift `objects` with bbox_type real, 0..1000 for norm1000). Every problem
// is returned, each naming the file, the line and where in the record. The checks that need the
// tokenizer (prompt length, template) belong to the session.

import { boxProblem, type Size } from './bbox.ts';
import type { ResizeOpts } from './formats/coords.ts';
import { recordExample, type ExampleMethod, type ExampleText } from './formats/example.ts';
import type { LineError } from './formats/jsonl.ts';
import type { DatasetRecord } from './formats/parse.ts';
import { isDataUri } from './formats/paths.ts';
import { decodeImageFile, ImageError, MAX_IMAGE_PIXELS, smartResize, type RawImage } from './image.ts';

/** The size of the frame a box is written in, for an image of `size`. */
export function frameSize(frame: DatasetRecord['answerFrame'], size: Size, opts: ResizeOpts): Size {
  if (frame === 'abs') return size;
  if (frame === 'norm1000') return { width: 1000, height: 1000 };
  if (frame === 'norm1') return { width: 1, height: 1 };
  const [h, w] = smartResize(size.height, size.width, 28, opts.minPixels, opts.maxPixels);
  return { width: w, height: h };
}

const FRAME_NAME = { resized: 'the resized frame', abs: 'original pixels', norm1000: '0–1000', norm1: '0–1' };

/**
 * Problems of `rec` given the (EXIF-oriented) sizes of its images, in order. An empty list means
 * the record can be trained on as far as images and boxes go.
 */
export function recordProblems(rec: DatasetRecord, sizes: Size[], opts: ResizeOpts): LineError[] {
  const out: LineError[] = [];
  const bad = (reason: string) => out.push({ file: rec.file, line: rec.line, reason });
  if (sizes.length !== rec.images.length) bad(`${rec.images.length} images named but ${sizes.length} sizes given`);
  const sizeOk: boolean[] = [];
  sizes.forEach((s, i) => {
    try {
      smartResize(s.height, s.width, 28, opts.minPixels, opts.maxPixels);
      sizeOk.push(true);
    } catch (e) {
      sizeOk.push(false);
      bad(`image ${rec.images[i] ?? i + 1} (${s.width}×${s.height}): ${(e as Error).message.replace(/^smart_resize: /, '')}`);
    }
  });
  if (rec.boxes.length && !sizes[0]) bad('the record has boxes but no image');
  if (!sizes[0] || !sizeOk[0]) return out;
  for (const b of rec.boxes) {
    const f = frameSize(b.frame, sizes[0], opts);
    const p = boxProblem([b.x1, b.y1, b.x2, b.y2], f.width, f.height);
    if (p) bad(`${b.where}: ${p} (${FRAME_NAME[b.frame]} of ${rec.images[0]}, ${sizes[0].width}×${sizes[0].height})`);
  }
  return out;
}

export interface PreparedRecord {
  record: DatasetRecord;
  /** decoded, EXIF-oriented, in the record's order */
  images: RawImage[];
  /** the example text for the method (TrainExample without its images) */
  example: ExampleText;
}

export interface PrepareOptions extends ResizeOpts {
  /** the decompression-bomb limit (PIL's MAX_IMAGE_PIXELS, decodeImageFile's maxPixels): warn above, refuse above twice. Not smart_resize's maxPixels. */
  pixelLimit?: number;
}

/**
 * Every record of a file made ready for `method`, or the reasons it is not — all of them, before
 * any step: each image read (`read(path)` with the record's resolved path) and decoded (header,
 * pixel limit, truncation, EXIF), its size accepted by smart_resize, every box inside the image in
 * its frame, the record of the method's kind. An image used by several records is decoded once.
 * The checks that need the tokenizer (prompt length, template) stay with the caller.
 */
export async function prepareRecords(records: DatasetRecord[], method: ExampleMethod, read: (path: string) => Promise<Uint8Array>, opts: PrepareOptions): Promise<{ ready: PreparedRecord[]; problems: LineError[]; warnings: string[] }> {
  const ready: PreparedRecord[] = [];
  const problems: LineError[] = [];
  const warnings: string[] = [];
  const cache = new Map<string, Promise<RawImage | string>>();
  const decode = (path: string): Promise<RawImage | string> => {
    let p = cache.get(path);
    if (!p) {
      p = (async () => {
        let bytes: Uint8Array;
        try {
          bytes = await read(path);
        } catch (e) {
          return `image ${path} cannot be read (${(e as Error).message})`;
        }
        try {
          return decodeImageFile(bytes, path, { maxPixels: opts.pixelLimit ?? MAX_IMAGE_PIXELS, onWarning: (w) => warnings.push(w) });
        } catch (e) {
          if (e instanceof ImageError) return e.message;
          throw e;
        }
      })();
      cache.set(path, p);
    }
    return p;
  };
  for (const rec of records) {
    const bad = (reason: string) => problems.push({ file: rec.file, line: rec.line, reason });
    if (rec.images.some(isDataUri)) {
      bad('data: URI images are read by the studio only; save the image next to the dataset file and name its path');
      continue;
    }
    const decoded = await Promise.all(rec.images.map(decode));
    const failed = decoded.filter((d): d is string => typeof d === 'string');
    failed.forEach(bad);
    if (failed.length) continue;
    const images = decoded as RawImage[];
    const sizes = images.map((im) => ({ width: im.width, height: im.height }));
    const found = recordProblems(rec, sizes, opts);
    problems.push(...found);
    if (found.length) continue;
    const example = recordExample(rec, method, sizes, opts);
    if (typeof example === 'string') {
      bad(example);
      continue;
    }
    ready.push({ record: rec, images, example });
  }
  return { ready, problems, warnings };
}
