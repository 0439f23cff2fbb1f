// COCO detection JSON (import and export).
//
// Coordinates: COCO `bbox` is [x, y, width, height] in absolute pixels of the image as listed in
// `images[].width/height`, origin at the top-left corner → x1 = x, y1 = y, x2 = x + w, y2 = y + h
// (frame 'abs'). If the decoded file turns out to have another size than COCO states, the box is
// rescaled by decoded / stated (done by the importer through `statedSize`).

import { xyxyToXywh, xywhToXyxy } from './coords.ts';
import { isObj, type LineError } from './jsonl.ts';
import type { ParsedSample } from './parse.ts';
import type { ImageRecord } from './types.ts';

export function isCoco(v: unknown): boolean {
  return isObj(v) && Array.isArray(v.images) && Array.isArray(v.annotations);
}

export interface CocoResult {
  samples: ParsedSample[];
  errors: LineError[];
  classes: string[];
  /** file_name → stated [width, height] */
  statedSize: Map<string, [number, number]>;
}

/** Errors name the annotation by its index (1-based) in "annotations" as the line. */
export function parseCoco(v: Record<string, unknown>, file: string): CocoResult {
  const errors: LineError[] = [];
  const cats = new Map<unknown, string>();
  const classes: string[] = [];
  for (const c of Array.isArray(v.categories) ? v.categories : []) {
    if (isObj(c) && c.id !== undefined) {
      const name = String(c.name ?? c.id);
      cats.set(c.id, name);
      if (!classes.includes(name)) classes.push(name);
    }
  }
  const images = new Map<unknown, { name: string; w: number; h: number }>();
  const statedSize = new Map<string, [number, number]>();
  (v.images as unknown[]).forEach((im, i) => {
    if (!isObj(im) || im.id === undefined || typeof im.file_name !== 'string') {
      errors.push({ file, line: 0, reason: `images[${i}]: needs "id" and "file_name"` });
      return;
    }
    const w = Number(im.width);
    const h = Number(im.height);
    images.set(im.id, { name: im.file_name, w, h });
    if (w > 0 && h > 0) statedSize.set(im.file_name, [w, h]);
  });
  const byImage = new Map<unknown, ParsedSample>();
  for (const [id, im] of images) {
    byImage.set(id, { file, line: 0, image: im.name, kind: 'grounding', question: '', answer: '', chosen: '', rejected: '', boxes: [], stated: im.w > 0 && im.h > 0 ? [im.w, im.h] : undefined });
  }
  (v.annotations as unknown[]).forEach((a, i) => {
    const line = i + 1;
    if (!isObj(a)) return errors.push({ file, line, reason: 'annotation is not an object' });
    const s = byImage.get(a.image_id);
    if (!s) return errors.push({ file, line, reason: `annotation ${String(a.id ?? line)}: unknown image_id ${String(a.image_id)}` });
    const bb = a.bbox;
    if (!Array.isArray(bb) || bb.length !== 4 || !bb.every((x) => typeof x === 'number' && Number.isFinite(x))) {
      return errors.push({ file, line, reason: `annotation ${String(a.id ?? line)}: bbox must be [x, y, w, h] numbers` });
    }
    if (bb[2] <= 0 || bb[3] <= 0) return errors.push({ file, line, reason: `annotation ${String(a.id ?? line)}: bbox has zero or negative size` });
    const label = cats.get(a.category_id) ?? String(a.category_id ?? '');
    if (s.line === 0) s.line = line;
    s.boxes.push({ ...xywhToXyxy(bb), frame: 'abs', label, question: '' });
  });
  return { samples: [...byImage.values()], errors, classes, statedSize };
}

/** COCO export: boxes in stored pixels of the exported images (the stored Blobs). */
export function toCoco(images: { path: string; img: ImageRecord }[], classes: string[]): Record<string, unknown> {
  const names = [...classes];
  for (const { img } of images) for (const b of img.labels.boxes) if (b.label && !names.includes(b.label)) names.push(b.label);
  const catId = (l: string) => (l ? names.indexOf(l) + 1 : 0);
  let annId = 0;
  const annotations: unknown[] = [];
  images.forEach(({ img }, i) => {
    for (const b of img.labels.boxes) {
      // Round the corners first so x + w gives back x2 exactly (to 0.01 px).
      const r2 = (n: number) => Math.round(n * 100) / 100;
      const [x, y, w, h] = xyxyToXywh({ x1: r2(b.x1), y1: r2(b.y1), x2: r2(b.x2), y2: r2(b.y2) }).map(r2);
      annotations.push({ id: ++annId, image_id: i + 1, category_id: catId(b.label), bbox: [x, y, w, h], area: r2(w * h), iscrowd: 0 });
    }
  });
  const categories = names.map((name, i) => ({ id: i + 1, name }));
  if (images.some(({ img }) => img.labels.boxes.some((b) => !b.label))) categories.push({ id: 0, name: 'object' });
  return {
    info: { description: 'exported by Patchwork' },
    images: images.map(({ path, img }, i) => ({ id: i + 1, file_name: path, width: img.width, height: img.height })),
    annotations,
    categories,
  };
}
