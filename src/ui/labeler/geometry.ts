// Box geometry for the labeler, in stored-image pixels. Pure; unit-tested.

import type { Box } from '../../data/formats/types.ts';

export type Handle = 'nw' | 'n' | 'ne' | 'e' | 'se' | 's' | 'sw' | 'w';
export const HANDLES: Handle[] = ['nw', 'n', 'ne', 'e', 'se', 's', 'sw', 'w'];

/** Boxes under this many pixels on a side are refused. */
export const MIN_SIDE = 2;

export interface Rect {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

const clamp = (x: number, lo: number, hi: number) => (x < lo ? lo : x > hi ? hi : x);

/** Whole stored pixels: what the labeler writes. */
export function snap(r: Rect): Rect {
  return { x1: Math.round(r.x1), y1: Math.round(r.y1), x2: Math.round(r.x2), y2: Math.round(r.y2) };
}

/** Box from two drag corners, ordered and clamped to the W x H image. */
export function rectFromDrag(ax: number, ay: number, bx: number, by: number, W: number, H: number): Rect {
  return {
    x1: clamp(Math.min(ax, bx), 0, W),
    y1: clamp(Math.min(ay, by), 0, H),
    x2: clamp(Math.max(ax, bx), 0, W),
    y2: clamp(Math.max(ay, by), 0, H),
  };
}

export function isValidRect(r: Rect): boolean {
  return r.x2 - r.x1 >= MIN_SIDE && r.y2 - r.y1 >= MIN_SIDE;
}

/** Moves a box by (dx, dy), stopping at the image edges (the size never changes). */
export function moveRect<T extends Rect>(r: T, dx: number, dy: number, W: number, H: number): T {
  const w = r.x2 - r.x1;
  const h = r.y2 - r.y1;
  const x1 = clamp(r.x1 + dx, 0, Math.max(0, W - w));
  const y1 = clamp(r.y1 + dy, 0, Math.max(0, H - h));
  return { ...r, x1, y1, x2: x1 + w, y2: y1 + h };
}

/**
 * Drags `handle` of `r` (the box as it was when the drag began) to image point (x, y). Edges that
 * cross simply swap, so dragging past the opposite side flips the box; the result stays inside
 * the image and never thinner than MIN_SIDE.
 */
export function resizeRect<T extends Rect>(r: T, handle: Handle, x: number, y: number, W: number, H: number): T {
  x = clamp(x, 0, W);
  y = clamp(y, 0, H);
  let { x1, y1, x2, y2 } = r;
  if (handle.includes('w')) x1 = x;
  if (handle.includes('e')) x2 = x;
  if (handle.includes('n')) y1 = y;
  if (handle.includes('s')) y2 = y;
  let nx1 = Math.min(x1, x2);
  let nx2 = Math.max(x1, x2);
  let ny1 = Math.min(y1, y2);
  let ny2 = Math.max(y1, y2);
  if (nx2 - nx1 < MIN_SIDE) {
    if (nx1 + MIN_SIDE <= W) nx2 = nx1 + MIN_SIDE;
    else nx1 = nx2 - MIN_SIDE;
  }
  if (ny2 - ny1 < MIN_SIDE) {
    if (ny1 + MIN_SIDE <= H) ny2 = ny1 + MIN_SIDE;
    else ny1 = ny2 - MIN_SIDE;
  }
  return { ...r, x1: nx1, y1: ny1, x2: nx2, y2: ny2 };
}

export function handlePoint(r: Rect, h: Handle): [number, number] {
  const x = h.includes('w') ? r.x1 : h.includes('e') ? r.x2 : (r.x1 + r.x2) / 2;
  const y = h.includes('n') ? r.y1 : h.includes('s') ? r.y2 : (r.y1 + r.y2) / 2;
  return [x, y];
}

const HIT_ORDER: Handle[] = ['nw', 'ne', 'se', 'sw', 'n', 'e', 's', 'w'];

/** The handle of `r` within `tol` image pixels of (x, y), corners first. */
export function hitHandle(r: Rect, x: number, y: number, tol: number): Handle | null {
  let best: Handle | null = null;
  let bestD = Infinity;
  for (const h of HIT_ORDER) {
    const [hx, hy] = handlePoint(r, h);
    const d = Math.max(Math.abs(hx - x), Math.abs(hy - y));
    if (d <= tol && d < bestD) {
      best = h;
      bestD = d;
    }
  }
  return best;
}

/** The box under (x, y): the smallest containing one, so nested boxes stay reachable. */
export function hitBox(boxes: Box[], x: number, y: number, tol = 0): Box | null {
  let best: Box | null = null;
  let bestArea = Infinity;
  for (const b of boxes) {
    if (x >= b.x1 - tol && x <= b.x2 + tol && y >= b.y1 - tol && y <= b.y2 + tol) {
      const a = (b.x2 - b.x1) * (b.y2 - b.y1);
      if (a < bestArea) {
        best = b;
        bestArea = a;
      }
    }
  }
  return best;
}

/**
 * The previous image's boxes for this one ("repeat"): new ids, scaled by the size ratio when the
 * images differ (same relative place), clamped, tiny results dropped.
 */
export function repeatBoxes(prev: Box[], prevW: number, prevH: number, W: number, H: number, newId: () => string): Box[] {
  const sx = W / prevW;
  const sy = H / prevH;
  const out: Box[] = [];
  for (const b of prev) {
    const r = rectFromDrag(b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy, W, H);
    const s = sx === 1 && sy === 1 ? r : snap(r);
    if (isValidRect(s)) out.push({ ...b, ...s, id: newId() });
  }
  return out;
}

export const CURSORS: Record<Handle, string> = {
  nw: 'nwse-resize', se: 'nwse-resize', ne: 'nesw-resize', sw: 'nesw-resize', n: 'ns-resize', s: 'ns-resize', e: 'ew-resize', w: 'ew-resize',
};

// ---------------------------------------------------------------- view (zoom and pan)

/**
 * The view is kept relative to the image (zoom over "fit", and the image point at the viewport
 * centre as fractions), so it stays put when moving to an image of another size.
 */
export interface View {
  zoom: number;
  cx: number;
  cy: number;
}

export const FIT_VIEW: View = { zoom: 1, cx: 0.5, cy: 0.5 };
export const MIN_ZOOM = 0.2;
export const MAX_ZOOM = 64;

export interface Layout {
  /** screen pixels per image pixel */
  scale: number;
  /** screen position of image (0, 0) inside the viewport */
  tx: number;
  ty: number;
}

export function layout(v: View, W: number, H: number, vw: number, vh: number, pad = 16): Layout {
  const fit = Math.max(1e-6, Math.min((vw - 2 * pad) / W, (vh - 2 * pad) / H));
  const scale = fit * v.zoom;
  return { scale, tx: vw / 2 - v.cx * W * scale, ty: vh / 2 - v.cy * H * scale };
}

/** Zoom by `factor` keeping the image point under the screen point (sx, sy) fixed. */
export function zoomAt(v: View, factor: number, sx: number, sy: number, W: number, H: number, vw: number, vh: number): View {
  const L = layout(v, W, H, vw, vh);
  const u = (sx - L.tx) / (W * L.scale);
  const w = (sy - L.ty) / (H * L.scale);
  const zoom = clamp(v.zoom * factor, MIN_ZOOM, MAX_ZOOM);
  const L2 = layout({ ...v, zoom }, W, H, vw, vh);
  const s2 = L2.scale;
  return { zoom, cx: u - (sx - vw / 2) / (W * s2), cy: w - (sy - vh / 2) / (H * s2) };
}

/** Pan by a screen-pixel delta. */
export function panBy(v: View, dx: number, dy: number, W: number, H: number, vw: number, vh: number): View {
  const { scale } = layout(v, W, H, vw, vh);
  return { ...v, cx: v.cx - dx / (W * scale), cy: v.cy - dy / (H * scale) };
}
