// Checks of a dataset record against its images' sizes, before any step: each image is a size
// Qwen2.5-VL's smart_resize accepts, and every box is 4 finite numbers with x1 < x2, y1 < y2,
// inside the image in the frame it is written in (the resized frame for bbox_2d answers, the
// original pixels for ms-swift `objects` with bbox_type real, 0..1000 for norm1000). Every problem
// is returned, each naming the file, the line and where in the record. session/dataset.ts calls it
// for every record of a dataset file, on the decoded image; the checks that need the tokenizer
// (prompt length, template, DPO pair) and the whole-file pass are session/examples.ts prepareExamples.

import { boxProblem, type Size } from './bbox.ts';
import type { ResizeOpts } from './formats/coords.ts';
import type { LineError } from './formats/jsonl.ts';
import type { DatasetRecord } from './formats/parse.ts';
import { smartResize } from './image.ts';

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
