// The labeler: toolbar, stage (image + boxes), side panel for the task kind's fields.
//
// Keyboard (ignored while typing in a field; Esc leaves the field):
//   → / D next image, ← / A previous (arrows nudge instead when a box is selected)
//   arrows: nudge the selected box 1 px (Shift: 10 px)      Delete / Backspace: delete the box
//   Ctrl+Z undo, Ctrl+Shift+Z / Ctrl+Y redo                 Ctrl+D / R: repeat the previous image's boxes
//   1-9: relabel the selected box (undoable) + new boxes    Tab / Shift+Tab: select next / previous box
//   + / - zoom, 0 fit                                        Esc: deselect, then back to the grid
//   H: hide / show the boxes                                 ?: this list
//   space+drag or middle-drag: pan                           wheel: zoom at the cursor

import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { fromFilePixels } from '../../data/formats/coords.ts';
import { taskRecords } from '../../data/formats/records.ts';
import { REWARD_KINDS, boxQuestion, defaultQuestion, uid, type Box, type DatasetMeta, type ImageRecord, type Labels } from '../../data/formats/types.ts';
import { smartResize } from '../../data/image.ts';
import { deleteImages, openImage, updateDataset } from '../../store/dataset.ts';
import { preloadImage, useUrl } from '../dataset/urls.ts';
import { colorFor } from './colors.ts';
import { FIT_VIEW, MAX_ZOOM, MIN_ZOOM, moveRect, repeatBoxes, type Rect } from './geometry.ts';
import { canRedo, canUndo } from './history.ts';
import { chooseClass } from './classChoice.ts';
import { commitEdit, editLabels, historyFor, redo, select, setView, undo, useLabeler } from './labelerStore.ts';
import { Stage } from './Stage.tsx';

export interface LabelerProps {
  ds: DatasetMeta;
  images: ImageRecord[];
  image: ImageRecord;
  readOnly: boolean;
}

const editable = (t: EventTarget | null) => t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));

export function Labeler({ ds, images, image, readOnly }: LabelerProps) {
  const view = useLabeler((s) => s.view);
  const selectedId = useLabeler((s) => s.selectedId);
  const activeClass = useLabeler((s) => s.activeClass);
  const navIds = useLabeler((s) => s.navIds);
  const showHelp = useLabeler((s) => s.showHelp);
  const hideBoxes = useLabeler((s) => s.hideBoxes);
  useLabeler((s) => s.version);
  const url = useUrl(image.id, 'image');
  const [flash, setFlash] = useState<{ text: string; undo?: boolean } | null>(null);
  const flashTimer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);

  const byId = useMemo(() => new Map(images.map((r) => [r.id, r])), [images]);
  const nav = useMemo(() => {
    const ids = navIds.filter((id) => byId.has(id));
    return ids.includes(image.id) ? ids : images.map((r) => r.id);
  }, [navIds, byId, image.id, images]);
  const idx = nav.indexOf(image.id);
  const labels = image.labels;
  const boxes = labels.boxes;
  const canDraw = ds.kind === 'grounding' || (ds.kind === 'rl' && ds.reward === 'iou');
  const hist = historyFor(image);
  const activeLabel = ds.classes[activeClass] ?? '';

  const say = useCallback((msg: string, undoable = false) => {
    setFlash({ text: msg, undo: undoable });
    clearTimeout(flashTimer.current);
    flashTimer.current = setTimeout(() => setFlash(null), undoable ? 6000 : 2500);
  }, []);

  // Preload neighbours; drop a selection that does not belong to this image.
  useEffect(() => {
    for (const k of [idx + 1, idx - 1, idx + 2]) if (nav[k]) preloadImage(nav[k]);
    if (selectedId && !boxes.some((b) => b.id === selectedId)) select(null);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [image.id]);

  const setBoxes = useCallback((next: Box[], merge?: string) => editLabels(image, { ...image.labels, boxes: next }, merge), [image]);

  const go = useCallback(
    (d: number) => {
      const k = idx + d;
      if (k < 0 || k >= nav.length) return say(d > 0 ? 'Last image' : 'First image');
      commitEdit(image);
      select(null);
      openImage(nav[k]);
    },
    [idx, nav, image, say],
  );

  const repeatPrevious = useCallback(() => {
    if (!canDraw) return;
    const prev = idx > 0 ? byId.get(nav[idx - 1]) : undefined;
    if (!prev || !prev.labels.boxes.length) return say('The previous image has no boxes to repeat');
    const copies = repeatBoxes(prev.labels.boxes, prev.width, prev.height, image.width, image.height, () => uid('b'));
    const same = (a: Box, b: Box) => a.x1 === b.x1 && a.y1 === b.y1 && a.x2 === b.x2 && a.y2 === b.y2 && a.label === b.label;
    const fresh = copies.filter((c) => !boxes.some((b) => same(b, c)));
    if (!fresh.length) return say('Those boxes are already here');
    if (setBoxes([...boxes, ...fresh])) say(`Repeated ${fresh.length} box${fresh.length > 1 ? 'es' : ''} from the previous image`);
  }, [canDraw, idx, nav, byId, image, boxes, setBoxes, say]);

  const setClass = useCallback(
    (k: number) => {
      const c = chooseClass(boxes, readOnly ? null : selectedId, ds.classes, k);
      if (c.kind !== 'none') useLabeler.setState({ activeClass: c.activeClass });
      if (c.kind === 'relabel') {
        commitEdit(image); // its own undo step, apart from a drag or typing before it
        if (setBoxes(c.boxes)) say(`${c.message} · Ctrl+Z undoes`, true);
        return;
      }
      say(c.message);
    },
    [ds.classes, boxes, selectedId, setBoxes, say, image, readOnly],
  );

  // Keyboard.
  const keys = useRef<(e: KeyboardEvent) => void>(() => {});
  keys.current = (e: KeyboardEvent) => {
    if (e.defaultPrevented) return;
    if (editable(e.target)) {
      if (e.key === 'Escape') (e.target as HTMLElement).blur();
      return;
    }
    const mod = e.ctrlKey || e.metaKey;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    const sel = boxes.find((b) => b.id === selectedId);
    const handled = () => {
      e.preventDefault();
      e.stopPropagation();
    };
    if (mod && key === 'z') {
      handled();
      if (!(e.shiftKey ? redo(image) : undo(image))) say(e.shiftKey ? 'Nothing to redo' : 'Nothing to undo');
      return;
    }
    if (mod && key === 'y') {
      handled();
      if (!redo(image)) say('Nothing to redo');
      return;
    }
    if (mod && key === 'd') {
      handled();
      return repeatPrevious();
    }
    if (mod || e.altKey) return;
    if (sel && ['ArrowLeft', 'ArrowRight', 'ArrowUp', 'ArrowDown'].includes(key)) {
      handled();
      if (readOnly) return;
      const step = e.shiftKey ? 10 : 1;
      const dx = key === 'ArrowLeft' ? -step : key === 'ArrowRight' ? step : 0;
      const dy = key === 'ArrowUp' ? -step : key === 'ArrowDown' ? step : 0;
      const moved = moveRect(sel, dx, dy, image.width, image.height);
      if (moved.x1 !== sel.x1 || moved.y1 !== sel.y1) setBoxes(boxes.map((b) => (b.id === sel.id ? moved : b)));
      return;
    }
    switch (key) {
      case 'ArrowRight':
      case 'd':
        handled();
        return go(1);
      case 'ArrowLeft':
      case 'a':
        handled();
        return go(-1);
      case 'r':
        handled();
        return repeatPrevious();
      case 'Delete':
      case 'Backspace':
        if (sel) {
          handled();
          setBoxes(boxes.filter((b) => b.id !== sel.id));
          select(null);
        }
        return;
      case 'Escape':
        handled();
        if (selectedId) select(null);
        else openImage(null);
        return;
      case 'Tab': {
        // Only from the image (body focus): Tab on a toolbar button keeps moving focus.
        if (!boxes.length || (e.target !== document.body && !(e.target as HTMLElement).classList?.contains('stage'))) return;
        handled();
        const i = boxes.findIndex((b) => b.id === selectedId);
        const n = boxes.length;
        select(boxes[(i < 0 ? (e.shiftKey ? n - 1 : 0) : (i + (e.shiftKey ? -1 : 1) + n) % n)].id);
        return;
      }
      case '+':
      case '=':
        handled();
        return setView({ ...view, zoom: Math.min(MAX_ZOOM, view.zoom * 1.25) });
      case '-':
        handled();
        return setView({ ...view, zoom: Math.max(MIN_ZOOM, view.zoom / 1.25) });
      case '0':
      case 'f':
        handled();
        return setView(FIT_VIEW);
      case 'h':
        handled();
        useLabeler.setState({ hideBoxes: !hideBoxes });
        return;
      case '?':
        handled();
        useLabeler.setState({ showHelp: !showHelp });
        return;
    }
    if (/^[1-9]$/.test(key)) {
      handled();
      setClass(Number(key) - 1);
    }
  };
  useEffect(() => {
    const h = (e: KeyboardEvent) => keys.current(e);
    window.addEventListener('keydown', h);
    return () => window.removeEventListener('keydown', h);
  }, []);

  const onCreate = useCallback(
    (r: Rect) => {
      const b: Box = { id: uid('b'), ...r, label: activeLabel, question: '' };
      if (setBoxes([...boxes, b])) select(b.id);
      if (useLabeler.getState().hideBoxes) useLabeler.setState({ hideBoxes: false });
    },
    [boxes, activeLabel, setBoxes],
  );
  const onChange = useCallback((nb: Box) => setBoxes(boxes.map((b) => (b.id === nb.id ? nb : b))), [boxes, setBoxes]);

  const o = (v: number) => Math.round(v * image.scale);
  const [rh, rw] = safeResize(image, ds);

  return (
    <div className="labeler" data-testid="labeler">
      <div className="labeler-bar">
        <button onClick={() => openImage(null)} title="Back to the grid (Esc)" data-testid="labeler-back">
          ← Grid
        </button>
        <div className="nav">
          <button onClick={() => go(-1)} disabled={idx <= 0} title="Previous image (← or A)" aria-label="Previous image">
            ‹
          </button>
          <span className="mono" data-testid="labeler-index">
            {idx + 1} / {nav.length}
          </span>
          <button onClick={() => go(1)} disabled={idx >= nav.length - 1} title="Next image (→ or D)" aria-label="Next image">
            ›
          </button>
        </div>
        <span className="labeler-name" title={image.name} data-testid="labeler-name">
          {image.name}
        </span>
        <span className="muted small mono">
          {image.origWidth}×{image.origHeight}
          {image.scale !== 1 && (
            <span className="badge warn" title={`Stored downscaled to ${image.width}×${image.height}; coordinates are shown in original pixels`}>
              stored {image.width}×{image.height}
            </span>
          )}
        </span>
        <span className="spacer" />
        <button onClick={() => undo(image) || say('Nothing to undo')} disabled={!canUndo(hist) || readOnly} title="Undo (Ctrl+Z)">
          Undo
        </button>
        <button onClick={() => redo(image) || say('Nothing to redo')} disabled={!canRedo(hist) || readOnly} title="Redo (Ctrl+Shift+Z or Ctrl+Y)">
          Redo
        </button>
        {canDraw && (
          <button onClick={repeatPrevious} disabled={idx <= 0 || readOnly} title="Copy the previous image's boxes here (Ctrl+D or R)">
            Repeat previous
          </button>
        )}
        <div className="zoom">
          <button onClick={() => setView({ ...view, zoom: Math.max(MIN_ZOOM, view.zoom / 1.25) })} title="Zoom out (-)" aria-label="Zoom out">
            −
          </button>
          <button onClick={() => setView(FIT_VIEW)} title="Zoom relative to fit; click to fit (0)" className="mono" data-testid="zoom-level">
            {view.zoom === 1 ? 'Fit' : `×${view.zoom.toFixed(view.zoom < 10 ? 2 : 1)}`}
          </button>
          <button onClick={() => setView({ ...view, zoom: Math.min(MAX_ZOOM, view.zoom * 1.25) })} title="Zoom in (+)" aria-label="Zoom in">
            +
          </button>
        </div>
        <button
          className="danger"
          disabled={readOnly}
          title="Delete this image from the dataset (undo in the notice)"
          data-testid="delete-image"
          onClick={() => {
            const next = nav[idx + 1] ?? nav[idx - 1] ?? null;
            select(null);
            void deleteImages([image.id]).then(() => openImage(next));
          }}
        >
          Delete image
        </button>
        <button className={showHelp ? 'active' : ''} onClick={() => useLabeler.setState({ showHelp: !showHelp })} title="Keyboard shortcuts (?)">
          ?
        </button>
      </div>
      <div className="labeler-body">
        <div className="stage-wrap">
          <Stage
            width={image.width}
            height={image.height}
            scale={image.scale}
            url={url}
            boxes={canDraw && !hideBoxes ? boxes : []}
            classes={ds.classes}
            selectedId={selectedId}
            view={view}
            canDraw={canDraw}
            readOnly={readOnly}
            onView={setView}
            onSelect={select}
            onCreate={onCreate}
            onChange={onChange}
            onRefused={say}
          />
          {flash && (
            <div className={flash.undo ? 'stage-flash with-action' : 'stage-flash'} role="status" data-testid="labeler-flash">
              {flash.text}
              {flash.undo && (
                <button
                  className="flash-undo"
                  data-testid="flash-undo"
                  onClick={() => {
                    undo(image);
                    setFlash(null);
                  }}
                >
                  Undo
                </button>
              )}
            </div>
          )}
          {showHelp && <ShortcutHelp onClose={() => useLabeler.setState({ showHelp: false })} />}
        </div>
        <aside className="label-panel">
          {readOnly && <div className="panel-note warn">Read-only: this dataset is open in another tab.</div>}
          {canDraw && <ClassBar ds={ds} activeClass={activeClass} onPick={setClass} readOnly={readOnly} selected={readOnly ? undefined : boxes.findIndex((b) => b.id === selectedId)} />}
          {ds.kind === 'grounding' && <BoxList ds={ds} image={image} boxes={boxes} selectedId={selectedId} readOnly={readOnly} o={o} />}
          {ds.kind === 'vqa' && <TextFields image={image} readOnly={readOnly} fields={[['question', 'Question', 'Describe this image.'], ['answer', 'Answer', 'The answer the model should give']]} />}
          {ds.kind === 'preference' && (
            <TextFields image={image} readOnly={readOnly} fields={[['question', 'Prompt', 'Describe this image.'], ['chosen', 'Chosen (better) answer', ''], ['rejected', 'Rejected (worse) answer', '']]} />
          )}
          {ds.kind === 'rl' && (
            <>
              <TextFields image={image} readOnly={readOnly} fields={[['question', 'Prompt', boxes[0] ? boxQuestion(boxes[0]) : 'The question sampled answers are scored on']]} />
              <div className="panel-section">
                <label className="field">
                  <span className="field-label">Reward</span>
                  <select value={ds.reward} disabled={readOnly} onChange={(e) => void updateDataset(ds.id, { reward: e.target.value as DatasetMeta['reward'] })} data-testid="reward-select">
                    {REWARD_KINDS.map((r) => (
                      <option key={r.kind} value={r.kind}>
                        {r.title} — {r.hint}
                      </option>
                    ))}
                  </select>
                </label>
              </div>
              {ds.reward === 'iou' ? (
                <BoxList ds={ds} image={image} boxes={boxes} selectedId={selectedId} readOnly={readOnly} o={o} reference />
              ) : (
                <TextFields image={image} readOnly={readOnly} fields={[['answer', 'Reference answer', ds.reward === 'format' ? 'optional for the format reward' : 'the exact answer']]} />
              )}
            </>
          )}
          <TrainingPreview ds={ds} image={image} rw={rw} rh={rh} />
        </aside>
      </div>
    </div>
  );
}

function safeResize(image: ImageRecord, ds: DatasetMeta): [number, number] {
  try {
    return smartResize(image.height, image.width, 28, ds.minPixels, ds.maxPixels);
  } catch {
    return [0, 0];
  }
}

/** The classes; says what a pick does now: relabel the selected box (index `selected`), or set the class of new boxes. */
function ClassBar({ ds, activeClass, onPick, readOnly, selected = -1 }: { ds: DatasetMeta; activeClass: number; onPick(k: number): void; readOnly: boolean; selected?: number }) {
  const [draft, setDraft] = useState('');
  const add = () => {
    const names = draft.split(',').map((s) => s.trim()).filter((s) => s && !ds.classes.includes(s));
    if (names.length) void updateDataset(ds.id, { classes: [...ds.classes, ...names] });
    setDraft('');
  };
  return (
    <div className="panel-section">
      <div className="panel-head">
        <h2>Classes</h2>
        <span className={selected >= 0 ? 'small class-mode relabel' : 'muted small class-mode'} data-testid="class-mode">
          {selected >= 0 ? `1–9 relabel box ${selected + 1}` : '1–9: class of new boxes'}
        </span>
      </div>
      <div className="class-chips" data-testid="class-chips">
        {ds.classes.map((c, k) => (
          <button key={c} className={k === activeClass ? 'class-chip active' : 'class-chip'} onClick={() => onPick(k)} title={`${k < 9 ? `Key ${k + 1}: ` : ''}${selected >= 0 ? `relabel box ${selected + 1} as "${c}" (and new boxes)` : `new boxes get "${c}"`}`} style={{ ['--c' as string]: colorFor(c, ds.classes) }}>
            <span className="swatch" />
            {k < 9 && <kbd>{k + 1}</kbd>}
            {c}
          </button>
        ))}
        {!ds.classes.length && <span className="muted small">No classes yet: boxes can still get any label.</span>}
      </div>
      {!readOnly && (
        <form
          className="class-add"
          onSubmit={(e) => {
            e.preventDefault();
            add();
          }}
        >
          <input value={draft} onChange={(e) => setDraft(e.target.value)} placeholder="Add classes (comma separated)" aria-label="New class names" data-testid="class-input" />
          <button type="submit" disabled={!draft.trim()}>
            Add
          </button>
        </form>
      )}
    </div>
  );
}

function BoxList({ ds, image, boxes, selectedId, readOnly, o, reference }: { ds: DatasetMeta; image: ImageRecord; boxes: Box[]; selectedId: string | null; readOnly: boolean; o(v: number): number; reference?: boolean }) {
  const rowRefs = useRef(new Map<string, HTMLDivElement>());
  useEffect(() => {
    if (selectedId) rowRefs.current.get(selectedId)?.scrollIntoView({ block: 'nearest' });
  }, [selectedId]);
  const patch = (id: string, p: Partial<Box>, merge?: string) => editLabels(image, { ...image.labels, boxes: boxes.map((b) => (b.id === id ? { ...b, ...p } : b)) }, merge);
  const listId = `classes-${ds.id}`;
  return (
    <div className="panel-section grow">
      <div className="panel-head">
        <h2>{reference ? 'Reference boxes' : 'Boxes'}</h2>
        <span className="muted small">{boxes.length ? `${boxes.length} · original px` : ''}</span>
      </div>
      <datalist id={listId}>
        {ds.classes.map((c) => (
          <option key={c} value={c} />
        ))}
      </datalist>
      {!boxes.length && <p className="muted small empty-hint">Drag on the image to draw a box. Press R to repeat the previous image's boxes.</p>}
      <div className="box-list" data-testid="box-list">
        {boxes.map((b, i) => {
          const sel = b.id === selectedId;
          return (
            <div
              key={b.id}
              ref={(el) => {
                if (el) rowRefs.current.set(b.id, el);
                else rowRefs.current.delete(b.id);
              }}
              className={sel ? 'box-row selected' : 'box-row'}
              data-testid="box-row"
              data-selected={sel || undefined}
              onMouseDown={() => select(b.id)}
            >
              <div className="box-row-head">
                <span className="swatch" style={{ background: colorFor(b.label, ds.classes) }} />
                <span className="box-index">{i + 1}</span>
                <input
                  className="box-label"
                  list={listId}
                  value={b.label}
                  placeholder="label"
                  disabled={readOnly}
                  aria-label={`Label of box ${i + 1}`}
                  data-testid="box-label"
                  onChange={(e) => patch(b.id, { label: e.target.value }, `label:${b.id}`)}
                  onBlur={(e) => {
                    commitEdit(image);
                    const v = e.target.value.trim();
                    if (v && !ds.classes.includes(v)) void updateDataset(ds.id, { classes: [...ds.classes, v] });
                  }}
                />
                <span className="box-coords mono" data-testid="box-coords" title="x1, y1 → x2, y2 in original-image pixels">
                  [{o(b.x1)}, {o(b.y1)}, {o(b.x2)}, {o(b.y2)}]
                </span>
                {!readOnly && (
                  <button
                    className="link danger"
                    title="Delete box (Delete)"
                    aria-label={`Delete box ${i + 1}`}
                    onClick={(e) => {
                      e.stopPropagation();
                      editLabels(image, { ...image.labels, boxes: boxes.filter((x) => x.id !== b.id) });
                      select(null);
                    }}
                  >
                    ✕
                  </button>
                )}
              </div>
              {!reference && (
                <input
                  className="box-question"
                  value={b.question}
                  placeholder={defaultQuestion(b.label)}
                  disabled={readOnly}
                  aria-label={`Question for box ${i + 1}`}
                  data-testid="box-question"
                  onChange={(e) => patch(b.id, { question: e.target.value }, `q:${b.id}`)}
                  onBlur={() => commitEdit(image)}
                />
              )}
            </div>
          );
        })}
      </div>
    </div>
  );
}

type TextKey = 'question' | 'answer' | 'chosen' | 'rejected';

function TextFields({ image, readOnly, fields }: { image: ImageRecord; readOnly: boolean; fields: [TextKey, string, string][] }) {
  return (
    <div className="panel-section">
      {fields.map(([k, label, placeholder]) => (
        <label className="field" key={k}>
          <span className="field-label">{label}</span>
          <textarea
            value={image.labels[k]}
            placeholder={placeholder}
            rows={k === 'question' ? 2 : 4}
            disabled={readOnly}
            data-testid={`field-${k}`}
            onChange={(e) => editLabels(image, { ...image.labels, [k]: e.target.value } as Labels, `${k}`)}
            onBlur={() => commitEdit(image)}
          />
        </label>
      ))}
    </div>
  );
}

/** What this image contributes to training, exactly as the trainer and the exports see it. */
function TrainingPreview({ ds, image, rw, rh }: { ds: DatasetMeta; image: ImageRecord; rw: number; rh: number }) {
  const recs = taskRecords(ds, image);
  const sel = useLabeler((s) => s.selectedId);
  const b = image.labels.boxes.find((x) => x.id === sel);
  const rb = b && rw ? fromFilePixels(b, 'resized', image.width, image.height, ds) : null;
  return (
    <details className="panel-section preview">
      <summary>
        Training records <span className="muted small">({recs.length}; model sees {rw}×{rh} px)</span>
      </summary>
      <p className="muted small">
        Boxes are answered in the smart-resized frame ({rw}×{rh}, min/max pixels {ds.minPixels.toLocaleString()}/{ds.maxPixels.toLocaleString()}).
        {rb && (
          <>
            {' '}Selected box → <code>[{rb.x1}, {rb.y1}, {rb.x2}, {rb.y2}]</code>.
          </>
        )}
      </p>
      {recs.map((r, i) => (
        <pre key={i} className="record mono">
          {r.kind === 'sft' ? `Q: ${r.question}\nA: ${r.answer}` : r.kind === 'preference' ? `Q: ${r.prompt}\n+ ${r.chosen}\n− ${r.rejected}` : `Q: ${r.prompt}\nreward ${r.reward}: ${r.reference}`}
        </pre>
      ))}
    </details>
  );
}

function ShortcutHelp({ onClose }: { onClose(): void }) {
  const rows: [string, string][] = [
    ['Drag', 'draw a box'],
    ['Click', 'select the box under the cursor'],
    ['Drag selected / handles', 'move / resize'],
    ['→ / D, ← / A', 'next / previous image'],
    ['Arrows (box selected)', 'nudge 1 px, Shift 10 px'],
    ['Delete', 'delete the selected box'],
    ['Ctrl+Z', 'undo'],
    ['Ctrl+Shift+Z, Ctrl+Y', 'redo'],
    ['Ctrl+D, R', "repeat the previous image's boxes"],
    ['1 – 9', 'class for the selected and new boxes'],
    ['Tab, Shift+Tab', 'select next / previous box'],
    ['Wheel, + / -, 0', 'zoom at cursor / in / out / fit'],
    ['Space+drag, middle-drag', 'pan'],
    ['H', 'hide / show the boxes'],
    ['Esc', 'deselect, then back to the grid'],
  ];
  return (
    <div className="shortcut-help" role="dialog" aria-label="Keyboard shortcuts">
      <div className="panel-head">
        <h2>Shortcuts</h2>
        <button className="link" onClick={onClose}>
          Close
        </button>
      </div>
      <table>
        <tbody>
          {rows.map(([k, v]) => (
            <tr key={k}>
              <td>
                <kbd>{k}</kbd>
              </td>
              <td>{v}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function useOpenLabeler(): (imageId: string, navIds: string[]) => void {
  return useCallback((imageId, navIds) => {
    useLabeler.setState({ navIds, selectedId: null });
    openImage(imageId);
  }, []);
}

