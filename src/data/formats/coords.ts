// Coordinate conversion between a box's frame in some file format and the pixels of the
// image file it refers to ("file pixels"). See types.ts for the frames.
//
// Import:  box in format frame --toFilePixels(file = the original image)--> original px --/scale--> stored px
// Export:  stored px == file px of the exported (stored) image --fromFilePixels--> format frame
//
// The "resized" frame is Qwen2.5-VL's: smart_resize(h, w) of the image file with the dataset's
// min/max pixels; a model trained with other min/max pixels would see offset boxes.

import { smartResize } from '../image.ts';

export type BoxFrame = 'abs' | 'norm1' | 'norm1000' | 'resized';

export interface XYXY {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

export interface ResizeOpts {
  minPixels: number;
  maxPixels: number;
}

/** Scale factors (sx, sy) from file pixels to the frame: frame = file * s. */
function frameScale(frame: BoxFrame, fileW: number, fileH: number, opts: ResizeOpts): [number, number] {
  switch (frame) {
    case 'abs':
      return [1, 1];
    case 'norm1':
      return [1 / fileW, 1 / fileH];
    case 'norm1000':
      return [1000 / fileW, 1000 / fileH];
    case 'resized': {
      const [rh, rw] = smartResize(fileH, fileW, 28, opts.minPixels, opts.maxPixels);
      return [rw / fileW, rh / fileH];
    }
  }
}

/** A box given in `frame` of an image file of fileW x fileH → pixels of that file. */
export function toFilePixels(b: XYXY, frame: BoxFrame, fileW: number, fileH: number, opts: ResizeOpts): XYXY {
  const [sx, sy] = frameScale(frame, fileW, fileH, opts);
  return { x1: b.x1 / sx, y1: b.y1 / sy, x2: b.x2 / sx, y2: b.y2 / sy };
}

/**
 * Pixels of an image file → `frame`. Integer frames (resized, norm1000) are rounded like the
 * model writes them; abs keeps 2 decimals; norm1 keeps 6.
 */
export function fromFilePixels(b: XYXY, frame: BoxFrame, fileW: number, fileH: number, opts: ResizeOpts): XYXY {
  const [sx, sy] = frameScale(frame, fileW, fileH, opts);
  const r = frame === 'resized' || frame === 'norm1000' ? Math.round : frame === 'abs' ? round2 : round6;
  return { x1: r(b.x1 * sx), y1: r(b.y1 * sy), x2: r(b.x2 * sx), y2: r(b.y2 * sy) };
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

/** Orders the corners and clamps to [0, W] x [0, H]. */
export function normalizeBox<T extends XYXY>(b: T, W: number, H: number): T {
  const x1 = clamp(Math.min(b.x1, b.x2), 0, W);
  const x2 = clamp(Math.max(b.x1, b.x2), 0, W);
  const y1 = clamp(Math.min(b.y1, b.y2), 0, H);
  const y2 = clamp(Math.max(b.y1, b.y2), 0, H);
  return { ...b, x1, y1, x2, y2 };
}

export function clamp(x: number, lo: number, hi: number): number {
  return x < lo ? lo : x > hi ? hi : x;
}

/** COCO [x, y, w, h] (absolute, top-left corner) → x1y1x2y2. */
export function xywhToXyxy([x, y, w, h]: number[]): XYXY {
  return { x1: x, y1: y, x2: x + w, y2: y + h };
}

export function xyxyToXywh(b: XYXY): [number, number, number, number] {
  return [b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1];
}

/** YOLO (cx, cy, w, h) normalized to [0, 1] → x1y1x2y2 normalized (frame norm1). */
export function cxcywhToXyxy([cx, cy, w, h]: number[]): XYXY {
  return { x1: cx - w / 2, y1: cy - h / 2, x2: cx + w / 2, y2: cy + h / 2 };
}

export function xyxyToCxcywh(b: XYXY): [number, number, number, number] {
  return [(b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2, b.x2 - b.x1, b.y2 - b.y1];
}
