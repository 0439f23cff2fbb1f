import { describe, expect, it } from 'vitest';
import type { Box } from '../../data/formats/types.ts';
import { FIT_VIEW, hitBox, hitHandle, isValidRect, layout, moveRect, panBy, rectFromDrag, repeatBoxes, resizeRect, snap, zoomAt } from './geometry.ts';
import { chooseClass } from './classChoice.ts';
import { HISTORY_LIMIT, canRedo, canUndo, historyReducer, initHistory, type History, type HistoryAction } from './history.ts';

const box = (id: string, x1: number, y1: number, x2: number, y2: number): Box => ({ id, x1, y1, x2, y2, label: '', question: '' });

describe('history reducer over boxes', () => {
  const run = (h: History<Box[]>, ...actions: HistoryAction<Box[]>[]) => actions.reduce(historyReducer, h);
  it('draw, nudge, undo, redo end where expected', () => {
    const a = [box('a', 10, 10, 50, 50)];
    const moved = [box('a', 11, 10, 51, 50)];
    let h = run(initHistory<Box[]>([]), { type: 'set', value: a }, { type: 'set', value: moved });
    expect(h.present).toBe(moved);
    h = run(h, { type: 'undo' });
    expect(h.present).toBe(a);
    h = run(h, { type: 'undo' });
    expect(h.present).toEqual([]);
    expect(canUndo(h)).toBe(false);
    h = run(h, { type: 'undo' });
    expect(h.present).toEqual([]);
    h = run(h, { type: 'redo' }, { type: 'redo' });
    expect(h.present).toBe(moved);
    expect(canRedo(h)).toBe(false);
    expect(run(h, { type: 'redo' })).toBe(h);
  });
  it('a new edit after undo drops the redo branch', () => {
    const h = run(initHistory<Box[]>([]), { type: 'set', value: [box('a', 0, 0, 5, 5)] }, { type: 'undo' }, { type: 'set', value: [box('b', 1, 1, 9, 9)] });
    expect(canRedo(h)).toBe(false);
    expect(h.present[0].id).toBe('b');
    expect(h.past).toEqual([[]]);
  });
  it('merges consecutive edits with the same key into one step; commit or undo ends merging', () => {
    const v = (s: string) => [{ ...box('a', 0, 0, 9, 9), question: s }];
    let h = run(initHistory(v('')), { type: 'set', value: v('W'), merge: 'q:a' }, { type: 'set', value: v('Wh'), merge: 'q:a' }, { type: 'set', value: v('Why'), merge: 'q:a' });
    expect(h.past.length).toBe(1);
    h = run(h, { type: 'commit' }, { type: 'set', value: v('Why?'), merge: 'q:a' });
    expect(h.past.length).toBe(2);
    h = run(h, { type: 'undo' }, { type: 'undo' });
    expect(h.present[0].question).toBe('');
  });
  it('setting the same value is a no-op; history is bounded; reset clears', () => {
    const v: Box[] = [];
    const h0 = initHistory(v);
    expect(historyReducer(h0, { type: 'set', value: v })).toBe(h0);
    let h = h0;
    for (let i = 0; i < HISTORY_LIMIT + 50; i++) h = historyReducer(h, { type: 'set', value: [box(String(i), 0, 0, 5, 5)] });
    expect(h.past.length).toBe(HISTORY_LIMIT);
    expect(historyReducer(h, { type: 'reset', value: [] })).toEqual(initHistory([]));
  });
});

describe('box geometry', () => {
  it('drag corners in any direction, clamped to the image; tiny boxes refused', () => {
    expect(rectFromDrag(50, 60, 10, -20, 100, 100)).toEqual({ x1: 10, y1: 0, x2: 50, y2: 60 });
    expect(rectFromDrag(90, 90, 150, 150, 100, 100)).toEqual({ x1: 90, y1: 90, x2: 100, y2: 100 });
    expect(isValidRect(rectFromDrag(10, 10, 11, 40, 100, 100))).toBe(false);
    expect(isValidRect(rectFromDrag(10, 10, 10, 10, 100, 100))).toBe(false);
    expect(isValidRect(rectFromDrag(10, 10, 12, 12, 100, 100))).toBe(true);
    expect(snap({ x1: 1.4, y1: 1.6, x2: 10.5, y2: 3 })).toEqual({ x1: 1, y1: 2, x2: 11, y2: 3 });
  });
  it('moves keep the size and stop at the edges', () => {
    const b = box('a', 10, 10, 30, 20);
    expect(moveRect(b, 5, -3, 100, 100)).toMatchObject({ x1: 15, y1: 7, x2: 35, y2: 17 });
    expect(moveRect(b, -50, 500, 100, 100)).toMatchObject({ x1: 0, y1: 90, x2: 20, y2: 100 });
    expect(moveRect(b, 1, 0, 100, 100).id).toBe('a');
  });
  it('resizes by each of the 8 handles, flips past the opposite edge, clamps', () => {
    const b = box('a', 10, 10, 30, 30);
    expect(resizeRect(b, 'se', 40, 50, 100, 100)).toMatchObject({ x1: 10, y1: 10, x2: 40, y2: 50 });
    expect(resizeRect(b, 'nw', 0, 5, 100, 100)).toMatchObject({ x1: 0, y1: 5, x2: 30, y2: 30 });
    expect(resizeRect(b, 'n', 999, 2, 100, 100)).toMatchObject({ x1: 10, y1: 2, x2: 30, y2: 30 });
    expect(resizeRect(b, 's', 0, 200, 100, 100)).toMatchObject({ x1: 10, y1: 10, x2: 30, y2: 100 });
    expect(resizeRect(b, 'e', 25, 0, 100, 100)).toMatchObject({ x1: 10, y1: 10, x2: 25, y2: 30 });
    expect(resizeRect(b, 'w', 50, 0, 100, 100)).toMatchObject({ x1: 30, y1: 10, x2: 50, y2: 30 });
    expect(resizeRect(b, 'ne', 5, -10, 100, 100)).toMatchObject({ x1: 5, y1: 0, x2: 10, y2: 30 });
    expect(resizeRect(b, 'sw', 12, 12, 100, 100)).toMatchObject({ x1: 12, y1: 10, x2: 30, y2: 12 });
    // Collapsing to a line keeps MIN_SIDE.
    expect(resizeRect(b, 'e', 10, 0, 100, 100)).toMatchObject({ x1: 10, x2: 12 });
    expect(resizeRect(box('z', 95, 95, 100, 100), 'w', 100, 0, 100, 100)).toMatchObject({ x1: 98, x2: 100 });
  });
  it('hit-tests handles (corners first) and the smallest box under the cursor', () => {
    const b = box('a', 10, 10, 30, 30);
    expect(hitHandle(b, 11, 9, 3)).toBe('nw');
    expect(hitHandle(b, 20, 31, 3)).toBe('s');
    expect(hitHandle(b, 20, 20, 3)).toBeNull();
    const big = box('big', 0, 0, 100, 100);
    const small = box('small', 40, 40, 60, 60);
    expect(hitBox([big, small], 50, 50)?.id).toBe('small');
    expect(hitBox([big, small], 10, 50)?.id).toBe('big');
    expect(hitBox([big, small], 150, 50)).toBeNull();
  });
  it('repeats boxes onto an image of the same or another size', () => {
    let n = 0;
    const id = () => `n${++n}`;
    const prev = [{ ...box('a', 10, 20, 30, 40), label: 'cat', question: 'q' }, box('b', 0, 0, 1, 1)];
    const same = repeatBoxes(prev, 100, 100, 100, 100, id);
    expect(same.map((b) => [b.id, b.x1, b.y1, b.x2, b.y2, b.label, b.question])).toEqual([['n1', 10, 20, 30, 40, 'cat', 'q']]);
    const half = repeatBoxes(prev, 100, 100, 50, 200, id);
    expect(half[0]).toMatchObject({ x1: 5, y1: 40, x2: 15, y2: 80 });
  });
});

describe('view', () => {
  it('fits the image and zooms around the cursor', () => {
    const L = layout(FIT_VIEW, 200, 100, 432, 432);
    expect(L.scale).toBe(2);
    expect([L.tx, L.ty]).toEqual([16, 116]);
    const v = zoomAt(FIT_VIEW, 2, 100, 150, 200, 100, 432, 432);
    const L2 = layout(v, 200, 100, 432, 432);
    // The image point under (100, 150) before is still under it after.
    expect(((100 - L.tx) / L.scale)).toBeCloseTo((100 - L2.tx) / L2.scale, 9);
    expect(((150 - L.ty) / L.scale)).toBeCloseTo((150 - L2.ty) / L2.scale, 9);
    expect(L2.scale).toBe(4);
  });
  it('pans by screen pixels; the relative view carries over to another image size', () => {
    const v = panBy({ zoom: 2, cx: 0.5, cy: 0.5 }, 40, -20, 200, 100, 432, 432);
    const a = layout({ zoom: 2, cx: 0.5, cy: 0.5 }, 200, 100, 432, 432);
    const b = layout(v, 200, 100, 432, 432);
    expect(b.tx - a.tx).toBeCloseTo(40);
    expect(b.ty - a.ty).toBeCloseTo(-20);
    // Same view on a 400x200 image: the same relative point sits at the viewport centre.
    const c = layout(v, 400, 200, 432, 432);
    expect((216 - c.tx) / c.scale / 400).toBeCloseTo(v.cx, 9);
  });
});

describe('choosing a class', () => {
  const classes = ['sun', 'house', 'tree'];
  const boxes = [{ ...box('a', 0, 0, 5, 5), label: 'sun' }, { ...box('b', 1, 1, 9, 9), label: '' }];
  it('with a box selected relabels that box (only it) and sets the class of new boxes', () => {
    const c = chooseClass(boxes, 'b', classes, 1);
    expect(c.kind).toBe('relabel');
    if (c.kind !== 'relabel') return;
    expect(c.activeClass).toBe(1);
    expect(c.boxes.map((b) => b.label)).toEqual(['sun', 'house']);
    expect(c.boxes[0]).toBe(boxes[0]); // the others are untouched
    expect(c.message).toBe('Box 2: "no label" → "house"');
    const again = chooseClass(c.boxes, 'a', classes, 2);
    expect(again.kind === 'relabel' && again.message).toBe('Box 1: "sun" → "tree"');
  });
  it('without a selection only sets the class of the next boxes', () => {
    expect(chooseClass(boxes, null, classes, 2)).toEqual({ kind: 'next', activeClass: 2, message: 'New boxes: "tree"' });
    expect(chooseClass(boxes, 'gone', classes, 0)).toEqual({ kind: 'next', activeClass: 0, message: 'New boxes: "sun"' });
  });
  it('the same class is a no-op that says so; a missing class changes nothing', () => {
    expect(chooseClass(boxes, 'a', classes, 0)).toEqual({ kind: 'same', activeClass: 0, message: 'Box 1 is already "sun"' });
    expect(chooseClass(boxes, 'a', classes, 5)).toEqual({ kind: 'none', message: 'No class 6: add classes in the panel' });
    expect(chooseClass(boxes, 'a', [], 0).kind).toBe('none');
  });
});
