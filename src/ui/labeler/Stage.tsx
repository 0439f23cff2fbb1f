// The drawing surface: the image (an <img>, positioned by the view) under an SVG overlay drawn in
// screen space, so strokes and handles stay crisp and the same size at any zoom.
//
// Mouse: drag on the image draws a box; click selects the box under the cursor (the smallest, so
// nested boxes are reachable); drag the selected box to move it, its 8 handles to resize; wheel
// zooms around the cursor; middle-drag or space+drag pans.

import { memo, useEffect, useLayoutEffect, useRef, useState, type PointerEvent as RPointerEvent } from 'react';
import type { Box } from '../../data/formats/types.ts';
import { CURSORS, HANDLES, handlePoint, hitBox, hitHandle, isValidRect, layout, moveRect, panBy, rectFromDrag, resizeRect, snap, zoomAt, type Handle, type Layout, type Rect, type View } from './geometry.ts';
import { colorFor } from './colors.ts';

type Drag =
  | { type: 'draw'; ax: number; ay: number; bx: number; by: number; sx0: number; sy0: number; moved: boolean }
  | { type: 'move'; id: string; x0: number; y0: number; orig: Box; cur: Box }
  | { type: 'resize'; id: string; handle: Handle; orig: Box; cur: Box }
  | { type: 'pan'; sx0: number; sy0: number; view0: View };

export interface StageProps {
  width: number;
  height: number;
  /** original / stored, for the readouts */
  scale: number;
  url: string | null;
  boxes: Box[];
  classes: string[];
  selectedId: string | null;
  view: View;
  canDraw: boolean;
  readOnly: boolean;
  onView(v: View): void;
  onSelect(id: string | null): void;
  /** a new box (stored pixels, whole) */
  onCreate(r: Rect): void;
  onChange(b: Box): void;
  onRefused(msg: string): void;
}

const HANDLE = 8;
const CLICK_PX = 3;

export const Stage = memo(function Stage(p: StageProps) {
  const ref = useRef<HTMLDivElement>(null);
  const [size, setSize] = useState({ w: 800, h: 600 });
  const [drag, setDrag] = useState<Drag | null>(null);
  const [hover, setHover] = useState<{ sx: number; sy: number } | null>(null);
  const [space, setSpace] = useState(false);
  const W = p.width;
  const H = p.height;
  const L: Layout = layout(p.view, W, H, size.w, size.h);
  const live = useRef({ L, p, size, drag });
  live.current = { L, p, size, drag };

  useLayoutEffect(() => {
    const el = ref.current!;
    const ro = new ResizeObserver(() => setSize({ w: el.clientWidth, h: el.clientHeight }));
    ro.observe(el);
    setSize({ w: el.clientWidth, h: el.clientHeight });
    return () => ro.disconnect();
  }, []);

  // Wheel zoom needs a non-passive listener to stop the page from scrolling.
  useEffect(() => {
    const el = ref.current!;
    const onWheel = (e: WheelEvent) => {
      e.preventDefault();
      const { p: props, size: sz } = live.current;
      const r = el.getBoundingClientRect();
      const dy = e.deltaMode === 1 ? e.deltaY * 40 : e.deltaMode === 2 ? e.deltaY * 400 : e.deltaY;
      const factor = Math.exp(-dy * (e.ctrlKey ? 0.01 : 0.0015));
      props.onView(zoomAt(props.view, factor, e.clientX - r.left, e.clientY - r.top, props.width, props.height, sz.w, sz.h));
    };
    el.addEventListener('wheel', onWheel, { passive: false });
    return () => el.removeEventListener('wheel', onWheel);
  }, []);

  // Space held = pan mode; Escape cancels a drag.
  useEffect(() => {
    const editable = (t: EventTarget | null) => t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
    const down = (e: KeyboardEvent) => {
      if (e.code === 'Space' && !editable(e.target)) {
        e.preventDefault();
        setSpace(true);
      }
      if (e.key === 'Escape' && live.current.drag) {
        e.stopImmediatePropagation();
        setDrag(null);
      }
    };
    const up = (e: KeyboardEvent) => e.code === 'Space' && setSpace(false);
    const blur = () => setSpace(false);
    window.addEventListener('keydown', down, true);
    window.addEventListener('keyup', up);
    window.addEventListener('blur', blur);
    return () => {
      window.removeEventListener('keydown', down, true);
      window.removeEventListener('keyup', up);
      window.removeEventListener('blur', blur);
    };
  }, []);

  const toImage = (e: { clientX: number; clientY: number }) => {
    const r = ref.current!.getBoundingClientRect();
    const sx = e.clientX - r.left;
    const sy = e.clientY - r.top;
    return { sx, sy, x: (sx - L.tx) / L.scale, y: (sy - L.ty) / L.scale };
  };
  const selected = p.boxes.find((b) => b.id === p.selectedId) ?? null;

  const onPointerDown = (e: RPointerEvent<HTMLDivElement>) => {
    const a = document.activeElement;
    if (a instanceof HTMLElement && a !== ref.current) a.blur(); // shortcuts work again after clicking the image
    const q = toImage(e);
    if (e.button === 1 || (e.button === 0 && space)) {
      e.preventDefault();
      ref.current!.setPointerCapture(e.pointerId);
      setDrag({ type: 'pan', sx0: q.sx, sy0: q.sy, view0: p.view });
      return;
    }
    if (e.button !== 0) return;
    ref.current!.setPointerCapture(e.pointerId);
    if (selected && !p.readOnly) {
      const h = hitHandle(selected, q.x, q.y, (HANDLE / 2 + 3) / L.scale);
      if (h) return setDrag({ type: 'resize', id: selected.id, handle: h, orig: selected, cur: selected });
      if (hitBox([selected], q.x, q.y)) return setDrag({ type: 'move', id: selected.id, x0: q.x, y0: q.y, orig: selected, cur: selected });
    }
    setDrag({ type: 'draw', ax: q.x, ay: q.y, bx: q.x, by: q.y, sx0: q.sx, sy0: q.sy, moved: false });
  };

  const onPointerMove = (e: RPointerEvent<HTMLDivElement>) => {
    const q = toImage(e);
    setHover({ sx: q.sx, sy: q.sy });
    if (!drag) return;
    if (drag.type === 'pan') return p.onView(panBy(drag.view0, q.sx - drag.sx0, q.sy - drag.sy0, W, H, size.w, size.h));
    if (drag.type === 'draw') {
      const moved = drag.moved || Math.hypot(q.sx - drag.sx0, q.sy - drag.sy0) > CLICK_PX;
      return setDrag({ ...drag, bx: q.x, by: q.y, moved });
    }
    if (drag.type === 'move') {
      const cur = moveRect(drag.orig, Math.round(q.x - drag.x0), Math.round(q.y - drag.y0), W, H);
      return setDrag({ ...drag, cur });
    }
    setDrag({ ...drag, cur: resizeRect(drag.orig, drag.handle, Math.round(q.x), Math.round(q.y), W, H) });
  };

  const onPointerUp = (e: RPointerEvent<HTMLDivElement>) => {
    const d = drag;
    setDrag(null);
    if (ref.current?.hasPointerCapture(e.pointerId)) ref.current.releasePointerCapture(e.pointerId);
    if (!d) return;
    if (d.type === 'draw') {
      if (!d.moved) {
        const q = toImage(e);
        p.onSelect(hitBox(p.boxes, q.x, q.y, 2 / L.scale)?.id ?? null);
        return;
      }
      if (p.readOnly) return p.onRefused('Read-only: this dataset is open in another tab.');
      if (!p.canDraw) return p.onRefused('This task kind has no boxes; switch the dataset to grounding (or prompts + IoU reward) to draw.');
      const r = snap(rectFromDrag(d.ax, d.ay, d.bx, d.by, W, H));
      if (!isValidRect(r)) return p.onRefused('Box too small: boxes need at least 2 px on each side.');
      p.onCreate(r);
      return;
    }
    if (d.type === 'move' || d.type === 'resize') {
      const c = d.cur;
      if (c.x1 !== d.orig.x1 || c.y1 !== d.orig.y1 || c.x2 !== d.orig.x2 || c.y2 !== d.orig.y2) p.onChange(c);
    }
  };

  // What to draw: live drag state overrides the stored box.
  const shown = p.boxes.map((b) => (drag && (drag.type === 'move' || drag.type === 'resize') && drag.id === b.id ? drag.cur : b));
  const sx = (x: number) => L.tx + x * L.scale;
  const sy = (y: number) => L.ty + y * L.scale;

  let cursor = 'crosshair';
  if (space || drag?.type === 'pan') cursor = drag?.type === 'pan' ? 'grabbing' : 'grab';
  else if (drag?.type === 'resize') cursor = CURSORS[drag.handle];
  else if (drag?.type === 'move') cursor = 'move';
  else if (hover && selected && !p.readOnly) {
    const ix = (hover.sx - L.tx) / L.scale;
    const iy = (hover.sy - L.ty) / L.scale;
    const h = hitHandle(selected, ix, iy, (HANDLE / 2 + 3) / L.scale);
    if (h) cursor = CURSORS[h];
    else if (hitBox([selected], ix, iy)) cursor = 'move';
  }

  const draft = drag?.type === 'draw' && drag.moved ? rectFromDrag(drag.ax, drag.ay, drag.bx, drag.by, W, H) : null;
  const draftOk = draft ? isValidRect(snap(draft)) : false;
  const o = (v: number) => Math.round(v * p.scale);
  const hoverImg = hover ? { x: (hover.sx - L.tx) / L.scale, y: (hover.sy - L.ty) / L.scale } : null;
  if (hoverImg && (hoverImg.x < 0 || hoverImg.y < 0 || hoverImg.x > W || hoverImg.y > H)) hoverImg.x = NaN;

  return (
    <div
      ref={ref}
      className="stage"
      data-testid="labeler-stage"
      style={{ cursor }}
      onPointerDown={onPointerDown}
      onPointerMove={onPointerMove}
      onPointerUp={onPointerUp}
      onPointerCancel={() => setDrag(null)}
      onPointerLeave={() => setHover(null)}
      onContextMenu={(e) => e.preventDefault()}
      onAuxClick={(e) => e.preventDefault()}
    >
      {p.url ? (
        <img
          className="stage-img"
          src={p.url}
          alt=""
          draggable={false}
          style={{ left: L.tx, top: L.ty, width: W * L.scale, height: H * L.scale, imageRendering: L.scale >= 3 ? 'pixelated' : 'auto' }}
        />
      ) : (
        <div className="stage-loading">Loading image…</div>
      )}
      <svg className="stage-svg" width={size.w} height={size.h}>
        <rect x={Math.round(sx(0)) - 0.5} y={Math.round(sy(0)) - 0.5} width={Math.round(W * L.scale) + 1} height={Math.round(H * L.scale) + 1} className="stage-frame" />
        {shown.map((b, i) => {
          const color = colorFor(b.label, p.classes);
          const x = Math.round(sx(b.x1));
          const y = Math.round(sy(b.y1));
          const w = Math.round(sx(b.x2)) - x;
          const h = Math.round(sy(b.y2)) - y;
          const sel = b.id === p.selectedId;
          const tag = `${i + 1}${b.label ? ' · ' + b.label : ''}`;
          const tagW = tag.length * 6.6 + 10;
          const tagY = y - 18 >= 0 ? y - 18 : y;
          return (
            <g key={b.id} className={sel ? 'box selected' : 'box'} data-box-id={b.id}>
              <rect x={x} y={y} width={w} height={h} fill={color} fillOpacity={sel ? 0.16 : 0.08} stroke={color} strokeWidth={sel ? 2 : 1.5} />
              {sel && <rect x={x - 1.5} y={y - 1.5} width={w + 3} height={h + 3} fill="none" stroke="#fff" strokeWidth={1} strokeOpacity={0.9} />}
              <g className="box-tag" transform={`translate(${x},${tagY})`}>
                <rect width={tagW} height={18} rx={3} fill={color} />
                <text x={5} y={13}>{tag}</text>
              </g>
              {sel && !p.readOnly &&
                HANDLES.map((hd) => {
                  const [hx, hy] = handlePoint(b, hd);
                  return <rect key={hd} className="handle" x={Math.round(sx(hx)) - HANDLE / 2 + 0.5} y={Math.round(sy(hy)) - HANDLE / 2 + 0.5} width={HANDLE - 1} height={HANDLE - 1} stroke={color} />;
                })}
              {sel && (drag?.type === 'move' || drag?.type === 'resize') && (
                <text className="readout" x={x} y={y + h + 15}>
                  {o(b.x1)}, {o(b.y1)} → {o(b.x2)}, {o(b.y2)} ({o(b.x2 - b.x1)}×{o(b.y2 - b.y1)})
                </text>
              )}
            </g>
          );
        })}
        {draft && (
          <g>
            <rect x={Math.round(sx(draft.x1)) + 0.5} y={Math.round(sy(draft.y1)) + 0.5} width={Math.round((draft.x2 - draft.x1) * L.scale)} height={Math.round((draft.y2 - draft.y1) * L.scale)} className={draftOk ? 'draft' : 'draft bad'} />
            <text className="readout" x={Math.round(sx(draft.x1))} y={Math.round(sy(draft.y2)) + 15}>
              {o(Math.round(draft.x2) - Math.round(draft.x1))}×{o(Math.round(draft.y2) - Math.round(draft.y1))}
              {draftOk ? '' : ' too small'}
            </text>
          </g>
        )}
        {hover && !drag && p.canDraw && !p.readOnly && !space && (
          <g className="crosshair">
            <line x1={Math.round(hover.sx) + 0.5} x2={Math.round(hover.sx) + 0.5} y1={Math.max(0, sy(0))} y2={Math.min(size.h, sy(H))} />
            <line y1={Math.round(hover.sy) + 0.5} y2={Math.round(hover.sy) + 0.5} x1={Math.max(0, sx(0))} x2={Math.min(size.w, sx(W))} />
          </g>
        )}
      </svg>
      <div className="stage-status mono" data-testid="stage-status">
        {hoverImg && !Number.isNaN(hoverImg.x) ? `${o(hoverImg.x)}, ${o(hoverImg.y)} px` : '—'} · {Math.round(L.scale * 100 / p.scale)}%
      </div>
    </div>
  );
});
