// Thumbnail grid with filters, box counts and selection (click opens the labeler; the checkbox,
// Ctrl/Shift-click select; Delete removes the selection with undo).

import { memo, useEffect, useMemo, useRef, useState } from 'react';
import { isLabelled, type DatasetMeta, type ImageRecord } from '../../data/formats/types.ts';
import { deleteImages, filteredImages, setFilter, undoLast, useDatasetStore, type Filter } from '../../store/dataset.ts';
import { useOpenLabeler } from '../labeler/Labeler.tsx';
import { useUrl } from './urls.ts';

const Tile = memo(function Tile(props: { img: ImageRecord; ds: DatasetMeta; selected: boolean; onOpen(id: string): void; onToggle(id: string, e: { shiftKey: boolean }): void }) {
  const { img, ds, selected } = props;
  const ref = useRef<HTMLDivElement>(null);
  const [visible, setVisible] = useState(false);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const io = new IntersectionObserver((es) => es.some((e) => e.isIntersecting) && setVisible(true), { rootMargin: '400px' });
    io.observe(el);
    return () => io.disconnect();
  }, []);
  const url = useUrl(img.id, 'thumb', visible);
  const n = img.labels.boxes.length;
  const done = isLabelled(ds.kind, img.labels, ds.reward);
  const boxy = ds.kind === 'grounding' || (ds.kind === 'rl' && ds.reward === 'iou');
  return (
    <div ref={ref} className={`tile${selected ? ' selected' : ''}${done ? ' done' : ''}`} data-testid="thumb" data-image-id={img.id} data-boxes={n}>
      <button
        className="tile-img"
        onClick={(e) => (e.ctrlKey || e.metaKey || e.shiftKey ? props.onToggle(img.id, e) : props.onOpen(img.id))}
        title={`${img.name} — ${img.origWidth}×${img.origHeight}`}
      >
        {url ? <img src={url} alt={img.name} loading="lazy" draggable={false} /> : <span className="tile-ph" />}
      </button>
      <label className="tile-check" title="Select">
        <input type="checkbox" checked={selected} onChange={(e) => props.onToggle(img.id, { shiftKey: (e.nativeEvent as MouseEvent).shiftKey })} aria-label={`Select ${img.name}`} />
      </label>
      {boxy ? (
        <span className={n ? 'tile-badge has' : 'tile-badge'} data-testid="box-count">
          {n} {n === 1 ? 'box' : 'boxes'}
        </span>
      ) : (
        <span className={done ? 'tile-badge has' : 'tile-badge'}>{done ? 'labelled' : 'to do'}</span>
      )}
      {img.scale !== 1 && (
        <span className="tile-badge warn left" title={`Downscaled from ${img.origWidth}×${img.origHeight} to ${img.width}×${img.height}`}>
          ↓{img.scale.toFixed(1)}×
        </span>
      )}
      <div className="tile-name" title={img.name}>
        {img.name}
      </div>
    </div>
  );
});

export function Grid({ ds, readOnly }: { ds: DatasetMeta; readOnly: boolean }) {
  const images = useDatasetStore((s) => s.images);
  const filter = useDatasetStore((s) => s.filter);
  const shown = useMemo(() => filteredImages({ images, filter }, ds), [images, filter, ds]);
  const [sel, setSel] = useState<Set<string>>(new Set());
  const anchor = useRef<string | null>(null);
  const openLabeler = useOpenLabeler();
  const labelled = useMemo(() => images.filter((r) => isLabelled(ds.kind, r.labels, ds.reward)).length, [images, ds]);
  const totalBoxes = useMemo(() => images.reduce((n, r) => n + r.labels.boxes.length, 0), [images]);

  // Forget selections of images that are gone.
  useEffect(() => {
    const ids = new Set(images.map((r) => r.id));
    setSel((s) => (Array.from(s).every((id) => ids.has(id)) ? s : new Set(Array.from(s).filter((id) => ids.has(id)))));
  }, [images]);

  const shownIds = useMemo(() => shown.map((r) => r.id), [shown]);
  const onOpen = useMemo(() => (id: string) => openLabeler(id, shownIds), [openLabeler, shownIds]);
  const onToggle = useMemo(
    () => (id: string, e: { shiftKey: boolean }) => {
      setSel((s) => {
        const next = new Set(s);
        if (e.shiftKey && anchor.current) {
          const a = shownIds.indexOf(anchor.current);
          const b = shownIds.indexOf(id);
          if (a >= 0 && b >= 0) for (let i = Math.min(a, b); i <= Math.max(a, b); i++) next.add(shownIds[i]);
        } else if (next.has(id)) next.delete(id);
        else next.add(id);
        anchor.current = id;
        return next;
      });
    },
    [shownIds],
  );

  // Delete removes the selection; Ctrl+Z brings back the last deletion; Ctrl+A selects all shown.
  useEffect(() => {
    const h = (e: KeyboardEvent) => {
      const t = e.target as HTMLElement;
      if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
      const mod = e.ctrlKey || e.metaKey;
      if ((e.key === 'Delete' || e.key === 'Backspace') && sel.size && !readOnly) {
        e.preventDefault();
        void deleteImages([...sel]);
        setSel(new Set());
      } else if (mod && e.key.toLowerCase() === 'z' && !e.shiftKey) {
        e.preventDefault();
        void undoLast();
      } else if (mod && e.key.toLowerCase() === 'a') {
        e.preventDefault();
        setSel(new Set(shownIds));
      } else if (e.key === 'Escape') setSel(new Set());
    };
    window.addEventListener('keydown', h);
    return () => window.removeEventListener('keydown', h);
  }, [sel, shownIds, readOnly]);

  const tabs: [Filter, string, number][] = [
    ['all', 'All', images.length],
    ['labelled', 'Labelled', labelled],
    ['unlabelled', 'Unlabelled', images.length - labelled],
  ];
  return (
    <>
      <div className="grid-bar">
        <div className="segmented" role="tablist" aria-label="Filter" data-testid="filter">
          {tabs.map(([f, label, n]) => (
            <button key={f} role="tab" aria-selected={filter === f} className={filter === f ? 'seg active' : 'seg'} onClick={() => setFilter(f)} data-testid={`filter-${f}`}>
              {label} <span className="count">{n}</span>
            </button>
          ))}
        </div>
        {(ds.kind === 'grounding' || ds.kind === 'rl') && <span className="muted small">{totalBoxes} boxes</span>}
        <span className="spacer" />
        {sel.size > 0 ? (
          <>
            <span className="small">{sel.size} selected</span>
            <button onClick={() => setSel(new Set())}>Clear</button>
            <button className="danger" disabled={readOnly} data-testid="delete-selected" onClick={() => {
              void deleteImages([...sel]);
              setSel(new Set());
            }}>
              Delete {sel.size}
            </button>
          </>
        ) : (
          shown.length > 0 && (
            <button onClick={() => onOpen(shown.find((r) => !isLabelled(ds.kind, r.labels, ds.reward))?.id ?? shown[0].id)} className="primary" data-testid="start-labelling">
              {labelled < images.length ? 'Label next unlabelled' : 'Open labeler'}
            </button>
          )
        )}
      </div>
      {shown.length === 0 && images.length > 0 && <p className="muted grid-empty">No {filter} images.</p>}
      <div className="thumbs" data-testid="thumb-grid">
        {shown.map((img) => (
          <Tile key={img.id} img={img} ds={ds} selected={sel.has(img.id)} onOpen={onOpen} onToggle={onToggle} />
        ))}
      </div>
    </>
  );
}
