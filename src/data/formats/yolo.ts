// YOLO detection labels (import and export): one `<image stem>.txt` per image, one box per line
// `class cx cy w h`, with class a 0-based index into classes.txt (or obj.names / data.yaml names)
// and cx, cy, w, h normalized by the image width/height to [0, 1].
//
// Coordinates: (cx, cy, w, h) normalized → x1 = cx - w/2, y1 = cy - h/2, x2 = cx + w/2, y2 = cy + h/2
// (frame 'norm1'); the importer multiplies by the decoded image's width/height.

import { cxcywhToXyxy, xyxyToCxcywh } from './coords.ts';
import type { LineError } from './jsonl.ts';
import type { ParsedSample } from './parse.ts';
import type { ImageRecord } from './types.ts';

/** classes.txt / obj.names: one name per line. data.yaml: `names: [a, b]` or a `names:` block. */
export function parseClassNames(text: string, path: string): string[] {
  if (/\.ya?ml$/i.test(path)) {
    const inline = /^names:\s*\[(.*)\]\s*$/m.exec(text);
    if (inline) return inline[1].split(',').map((s) => s.trim().replace(/^['"]|['"]$/g, '')).filter(Boolean);
    const block = /^names:\s*\n((?:[ \t]+.*\n?)+)/m.exec(text);
    if (!block) return [];
    return block[1]
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .map((l) => l.replace(/^-\s*/, '').replace(/^\d+\s*:\s*/, '').replace(/^['"]|['"]$/g, ''));
  }
  return text.split(/\r?\n/).map((s) => s.trim()).filter(Boolean);
}

/**
 * The image a YOLO label file belongs to, among `images` (paths): same stem, preferring the
 * labels/ ↔ images/ sibling (…/labels/a.txt → …/images/a.png), else the first of that stem.
 */
export function yoloImageFor<T>(txtPath: string, images: T[], pathOf: (t: T) => string): T | undefined {
  const stem = (p: string) => p.replace(/\\/g, '/').replace(/^.*\//, '').replace(/\.[^.]*$/, '').toLowerCase();
  const cands = images.filter((im) => stem(pathOf(im)) === stem(txtPath));
  const want = txtPath.replace(/(^|\/)labels\//, '$1images/').replace(/\.txt$/i, '').toLowerCase();
  return cands.find((c) => pathOf(c).replace(/\.[^./]*$/, '').toLowerCase() === want) ?? cands[0];
}

export function isClassNamesFile(path: string): boolean {
  return /(^|\/)(classes\.txt|obj\.names|data\.ya?ml|dataset\.ya?ml)$/i.test(path);
}

/**
 * One YOLO label file → a sample for `image` (its path). Bad lines are reported by number; the
 * good ones kept. Unknown class indices keep the number as the label.
 */
export function parseYoloLabels(text: string, file: string, image: string, classes: string[]): { sample: ParsedSample; errors: LineError[] } {
  const errors: LineError[] = [];
  const sample: ParsedSample = { file, line: 1, image, kind: 'grounding', question: '', answer: '', chosen: '', rejected: '', boxes: [] };
  text.split(/\r?\n/).forEach((raw, i) => {
    const s = raw.trim();
    if (!s || s.startsWith('#')) return;
    const parts = s.split(/\s+/);
    const nums = parts.map(Number);
    if (parts.length < 5 || !nums.every(Number.isFinite)) {
      errors.push({ file, line: i + 1, reason: `expected "class cx cy w h" numbers, got "${s.slice(0, 60)}"` });
      return;
    }
    if (parts.length > 5) {
      // A segmentation polygon (class x1 y1 x2 y2 ...) or a confidence column: keep the box part only when it has 6 fields.
      if (parts.length !== 6) {
        errors.push({ file, line: i + 1, reason: 'polygon (segmentation) labels are not supported; expected 5 fields' });
        return;
      }
    }
    const [cls, cx, cy, w, h] = nums;
    if (!Number.isInteger(cls) || cls < 0) {
      errors.push({ file, line: i + 1, reason: `class must be a non-negative integer, got ${parts[0]}` });
      return;
    }
    if (w <= 0 || h <= 0 || [cx, cy, w, h].some((x) => x < -0.01 || x > 1.01)) {
      errors.push({ file, line: i + 1, reason: 'cx cy w h must be normalized to [0, 1] with w, h > 0' });
      return;
    }
    sample.boxes.push({ ...cxcywhToXyxy([cx, cy, w, h]), frame: 'norm1', label: classes[cls] ?? String(cls), question: '' });
  });
  return { sample, errors };
}

/** One image's boxes → YOLO lines (normalized by the stored image size), classes extended as needed. */
export function toYoloLines(img: ImageRecord, classes: string[]): string {
  const r = (x: number) => Number(x.toFixed(6));
  return img.labels.boxes
    .map((b) => {
      const label = b.label || 'object';
      let k = classes.indexOf(label);
      if (k < 0) {
        classes.push(label);
        k = classes.length - 1;
      }
      const [cx, cy, w, h] = xyxyToCxcywh({ x1: b.x1 / img.width, y1: b.y1 / img.height, x2: b.x2 / img.width, y2: b.y2 / img.height });
      return `${k} ${r(cx)} ${r(cy)} ${r(w)} ${r(h)}`;
    })
    .join('\n');
}
