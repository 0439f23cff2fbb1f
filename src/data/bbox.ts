// Grounding boxes. Qwen2.5-VL reads and writes absolute pixel coordinates of the image *after*
// smart_resize: `{"bbox_2d": [x1, y1, x2, y2], "label": "..."}`. Labels are stored in original image
// pixels; they are mapped into the resized frame for training targets and model answers are mapped
// back. Use the same min/max pixels at training and inference, or boxes come out offset.

/** [x1, y1, x2, y2]: left, top, right, bottom edges in pixels (x right, y down). */
export type Box = [number, number, number, number];
export interface Size { width: number; height: number }
export interface Grounding { bbox: Box; label?: string }

/** Order the corners and clamp the edges to [0, width] × [0, height]. */
export function clampBox(box: Box, size: Size): Box {
  const cx = (v: number) => Math.min(Math.max(v, 0), size.width);
  const cy = (v: number) => Math.min(Math.max(v, 0), size.height);
  const [x1, y1, x2, y2] = box;
  return [cx(Math.min(x1, x2)), cy(Math.min(y1, y2)), cx(Math.max(x1, x2)), cy(Math.max(y1, y2))];
}

function scaleBox(box: Box, from: Size, to: Size): Box {
  if (!(from.width > 0 && from.height > 0 && to.width > 0 && to.height > 0)) {
    throw new Error(`bbox: sizes must be positive, got ${from.width}x${from.height} → ${to.width}x${to.height} (WxH)`);
  }
  if (!box.every(Number.isFinite)) throw new Error(`bbox: non-finite coordinate in [${box.join(', ')}]`);
  const sx = to.width / from.width, sy = to.height / from.height;
  return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy];
}

/**
 * Original-image box → the resized frame the model sees: scale, round each edge to the nearest
 * integer (the model writes integers), clamp to [0, W] × [0, H], order the corners.
 */
export function boxToResized(box: Box, original: Size, resized: Size): Box {
  const s = clampBox(scaleBox(box, original, resized), resized);
  return [Math.round(s[0]), Math.round(s[1]), Math.round(s[2]), Math.round(s[3])];
}

/** Resized-frame box (a model answer) → original image pixels: scale back, clamp, keep fractions. */
export function boxToOriginal(box: Box, resized: Size, original: Size): Box {
  return clampBox(scaleBox(clampBox(box, resized), resized, original), original);
}

/** Intersection over union of two boxes (continuous areas; 0 when the union is empty). */
export function iou(a: Box, b: Box): number {
  const area = (x1: number, y1: number, x2: number, y2: number) => Math.max(0, x2 - x1) * Math.max(0, y2 - y1);
  const inter = area(Math.max(a[0], b[0]), Math.max(a[1], b[1]), Math.min(a[2], b[2]), Math.min(a[3], b[3]));
  const union = area(...a) + area(...b) - inter;
  return union > 0 ? inter / union : 0;
}

/**
 * Two box lists matched one to one, greedily, best IoU pairs first: the sum of the matched IoUs
 * (the IoU reward divides it by the larger count, the Predictions score by the labelled count).
 */
export function matchedIouSum(a: readonly Box[], b: readonly Box[]): number {
  const pairs: [number, number, number][] = [];
  a.forEach((x, i) => b.forEach((y, j) => pairs.push([iou(x, y), i, j])));
  pairs.sort((p, q) => q[0] - p[0]);
  const usedA = new Set<number>(), usedB = new Set<number>();
  let sum = 0;
  for (const [v, i, j] of pairs) {
    if (usedA.has(i) || usedB.has(j)) continue;
    usedA.add(i);
    usedB.add(j);
    sum += v;
  }
  return sum;
}

/**
 * The answer text for a list of boxes, in the form Qwen2.5-VL itself answers grounding prompts:
 * a ```json fence around a list, one `{"bbox_2d": [...], "label": "..."}` per line.
 */
export function formatGroundings(items: Grounding[], opts: { fence?: boolean } = {}): string {
  const lines = items.map((g) => `\t{"bbox_2d": [${g.bbox.join(', ')}]${g.label !== undefined ? `, "label": ${JSON.stringify(g.label)}` : ''}}`);
  const body = `[\n${lines.join(',\n')}\n]`;
  return opts.fence === false ? body : '```json\n' + body + '\n```';
}

// Index just past the `}` matching the `{` at `start` (strings and escapes respected), or -1.
function matchBrace(text: string, start: number): number {
  let depth = 0;
  let quote = '';
  for (let i = start; i < text.length; i++) {
    const ch = text[i];
    if (quote) {
      if (ch === '\\') i++;
      else if (ch === quote) quote = '';
    } else if (ch === '"' || ch === "'") quote = ch;
    else if (ch === '{') depth++;
    else if (ch === '}' && --depth === 0) return i + 1;
  }
  return -1;
}

function parseLoose(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    // Python-style dicts and trailing commas, as models sometimes write them.
    const fixed = s.replace(/'([^'\\]*)'/g, (_, x: string) => JSON.stringify(x)).replace(/,\s*([}\]])/g, '$1');
    try { return JSON.parse(fixed); } catch { return undefined; }
  }
}

function toGrounding(o: unknown): Grounding | undefined {
  if (!o || typeof o !== 'object' || Array.isArray(o)) return undefined;
  const r = o as Record<string, unknown>;
  const b = r.bbox_2d ?? r.bbox;
  if (!Array.isArray(b) || b.length !== 4) return undefined;
  const nums = b.map((v) => (typeof v === 'string' && v.trim() !== '' ? Number(v) : v));
  if (!nums.every((v) => typeof v === 'number' && Number.isFinite(v))) return undefined;
  const g: Grounding = { bbox: nums as Box };
  if (typeof r.label === 'string') g.label = r.label;
  return g;
}

/**
 * Every `{"bbox_2d": [x1, y1, x2, y2], "label": "..."}` object in a model answer, in order: a single
 * object or a list, inside or outside ``` fences, amid other text, single-quoted, with trailing commas,
 * or a list cut short by the token limit (complete objects are kept). `bbox` is accepted for `bbox_2d`.
 * Coordinates are returned as written (resized frame); map them with boxToOriginal.
 */
export function parseGroundings(text: string): Grounding[] {
  const out: Grounding[] = [];
  for (let i = text.indexOf('{'); i >= 0; ) {
    const end = matchBrace(text, i);
    const g = end > 0 ? toGrounding(parseLoose(text.slice(i, end))) : undefined;
    if (g) out.push(g);
    i = text.indexOf('{', g ? end : i + 1);
  }
  return out;
}

function showBox(box: readonly unknown[]): string {
  return `[${box.map((v) => (typeof v === 'number' ? String(v) : JSON.stringify(v) ?? String(v))).join(', ')}]`;
}

/** boxProblem without the image: 4 finite numbers, x1 < x2, y1 < y2 (null when so). */
export function boxShapeProblem(box: readonly unknown[]): string | null {
  const shown = showBox(box);
  if (box.length !== 4) return `box ${shown} must be 4 numbers [x1, y1, x2, y2], it has ${box.length}`;
  const bad = box.findIndex((v) => typeof v !== 'number' || !Number.isFinite(v));
  if (bad >= 0) return `box ${shown}: ${['x1', 'y1', 'x2', 'y2'][bad]} is not a finite number`;
  const [x1, y1, x2, y2] = box as number[];
  if (!(x1 < x2)) return `box ${shown}: x1 ${x1} must be less than x2 ${x2}`;
  if (!(y1 < y2)) return `box ${shown}: y1 ${y1} must be less than y2 ${y2}`;
  return null;
}

/**
 * What is wrong with a box of a `width` × `height` image (in the frame the box is written in),
 * or null when it is usable: 4 finite numbers, x1 < x2, y1 < y2, every edge inside [0, width] ×
 * [0, height]. Used by the dataset checks before training and by the import.
 */
export function boxProblem(box: readonly unknown[], width: number, height: number): string | null {
  const shape = boxShapeProblem(box);
  if (shape) return shape;
  const shown = showBox(box);
  const [x1, y1, x2, y2] = box as number[];
  const out: string[] = [];
  if (x1 < 0) out.push(`x1 ${x1} < 0`);
  if (y1 < 0) out.push(`y1 ${y1} < 0`);
  if (x2 > width) out.push(`x2 ${x2} > width ${width}`);
  if (y2 > height) out.push(`y2 ${y2} > height ${height}`);
  if (out.length) return `box ${shown} is outside the ${width}×${height} image (${out.join(', ')})`;
  return null;
}

/**
 * Every grounding object in a text, with what is wrong with the ones that cannot be used: a
 * `bbox_2d` (or `bbox`) that is not 4 finite numbers ([1, NaN, 3, 4], [1, 2, 3]) or an object that
 * does not parse. parseGroundings skips those silently (right for model answers); datasets must
 * not lose a box without saying so.
 */
export function scanGroundings(text: string): { groundings: Grounding[]; problems: string[] } {
  const groundings: Grounding[] = [];
  const problems: string[] = [];
  for (let i = text.indexOf('{'); i >= 0; ) {
    const end = matchBrace(text, i);
    if (end < 0) {
      if (/"bbox(_2d)?"\s*:/.test(text.slice(i))) problems.push(`a bbox_2d object is not closed: ${text.slice(i, i + 60)}`);
      break;
    }
    const s = text.slice(i, end);
    const g = toGrounding(parseLoose(s));
    if (g) {
      groundings.push(g);
      i = text.indexOf('{', end);
      continue;
    }
    if (/["']bbox(_2d)?["']\s*:/.test(s) && !/\{[^{}]*\{/.test(s.slice(1))) {
      // Name the problem: NaN / Infinity are not JSON, so read them as null to point at the coordinate.
      const o = parseLoose(s.replace(/\b(NaN|-?Infinity)\b/g, 'null')) as Record<string, unknown> | undefined;
      const b = o && typeof o === 'object' ? (o.bbox_2d ?? o.bbox) : undefined;
      if (Array.isArray(b)) {
        const shown = s.match(/\[[^\]]*\]/)?.[0] ?? JSON.stringify(b);
        const p = b.length !== 4 ? `must be 4 numbers [x1, y1, x2, y2], it has ${b.length}` : `${['x1', 'y1', 'x2', 'y2'][b.findIndex((v) => typeof v !== 'number' || !Number.isFinite(v))]} is not a finite number`;
        problems.push(`box ${shown}${b.length !== 4 ? ' ' : ': '}${p}`);
      } else problems.push(`a bbox_2d object does not parse: ${s.slice(0, 80)}`);
      i = text.indexOf('{', end);
      continue;
    }
    i = text.indexOf('{', i + 1);
  }
  return { groundings, problems };
}
