// The Dataset screen: datasets on the left; the open dataset's grid (drop zone) or the labeler on
// the right; notices for imports, undo and storage. Images arrive by drop (files or folders),
// the pickers, or a paste anywhere on the screen.

import { useEffect, useState, type DragEvent } from 'react';
import type { BoxFrame } from '../../data/formats/coords.ts';
import { addFiles, cancelIngest, FRAME_TITLES, initDatasets, notify, setImportFrame, useDatasetStore } from '../../store/dataset.ts';
import { Labeler } from '../labeler/Labeler.tsx';
import { collectDrop, collectPaste, filesFromList, hasFiles } from './files.ts';
import { Grid } from './Grid.tsx';
import { Header } from './Header.tsx';
import { Notices } from './Notices.tsx';
import { Sidebar } from './Sidebar.tsx';
import './dataset.css';

async function onDropFiles(e: DragEvent) {
  e.preventDefault();
  e.stopPropagation();
  const { files, problems } = await collectDrop(e.dataTransfer);
  if (problems.length) notify({ level: 'warn', title: 'Some dropped items could not be read', details: problems });
  if (files.length) await addFiles(files);
}

export function DatasetScreen() {
  const ready = useDatasetStore((s) => s.ready);
  const datasets = useDatasetStore((s) => s.datasets);
  const currentId = useDatasetStore((s) => s.currentId);
  const images = useDatasetStore((s) => s.images);
  const readOnly = useDatasetStore((s) => s.readOnly);
  const openImageId = useDatasetStore((s) => s.openImageId);
  const progress = useDatasetStore((s) => s.progress);
  const [over, setOver] = useState(false);
  const ds = datasets.find((d) => d.id === currentId);
  const open = openImageId ? images.find((r) => r.id === openImageId) : undefined;

  useEffect(() => {
    void initDatasets().catch((e) => notify({ level: 'error', title: `Could not open the dataset storage (IndexedDB): ${(e as Error).message}` }));
  }, []);

  // Paste images anywhere on this screen (not into text fields).
  useEffect(() => {
    const onPaste = (e: ClipboardEvent) => {
      const t = e.target as HTMLElement | null;
      if (t && (t.isContentEditable || /^(INPUT|TEXTAREA)$/.test(t.tagName))) return;
      const files = collectPaste(e.clipboardData);
      if (!files.length) return;
      e.preventDefault();
      void addFiles(files);
    };
    window.addEventListener('paste', onPaste);
    return () => window.removeEventListener('paste', onPaste);
  }, []);

  const dragProps = {
    onDragOver: (e: DragEvent) => {
      if (!hasFiles(e.dataTransfer)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = readOnly ? 'none' : 'copy';
      if (!over) setOver(true);
    },
    onDragLeave: (e: DragEvent) => {
      if (e.currentTarget === e.target || !e.currentTarget.contains(e.relatedTarget as Node)) setOver(false);
    },
    onDrop: (e: DragEvent) => {
      setOver(false);
      void onDropFiles(e);
    },
  };

  return (
    <div className={`dataset-screen${over ? ' drag-over' : ''}`} data-testid="dataset-screen" data-ready={ready} {...dragProps}>
      <Sidebar />
      <section className="ds-main">
        {progress && (
          <div className="progress" role="progressbar" aria-valuenow={progress.done} aria-valuemax={progress.total} data-testid="progress">
            <div className="progress-bar">
              <span style={{ width: `${progress.total ? (progress.done / progress.total) * 100 : 0}%` }} />
            </div>
            <span className="small">
              {progress.label} ({progress.done}/{progress.total})
            </span>
            <button className="link" onClick={cancelIngest}>
              Stop
            </button>
          </div>
        )}
        {readOnly && ds && (
          <div className="banner warn ro-banner" data-testid="readonly-banner">
            <b>“{ds.name}” is open in another tab</b>, so it is read-only here (one tab writes a dataset at a time, so nothing is lost). It becomes editable here as soon as the other tab closes it.
          </div>
        )}
        {!ready ? (
          <p className="muted">Opening datasets…</p>
        ) : ds && open ? (
          <Labeler ds={ds} images={images} image={open} readOnly={readOnly} />
        ) : (
          <>
            {ds && <Header ds={ds} readOnly={readOnly} />}
            <div className={`drop-zone${images.length ? '' : ' empty'}`} data-testid="drop-zone" {...dragProps}>
              {ds && images.length > 0 ? (
                <Grid ds={ds} readOnly={readOnly} />
              ) : (
                <EmptyDrop hasDataset={!!ds} />
              )}
            </div>
          </>
        )}
      </section>
      <Notices />
    </div>
  );
}

function EmptyDrop({ hasDataset }: { hasDataset: boolean }) {
  const frame = useDatasetStore((s) => s.answerFrame);
  return (
    <div className="drop-empty">
      <div className="drop-icon" aria-hidden>
        ⬇
      </div>
      <h3>Drop images or folders here</h3>
      <p className="muted">
        or paste an image (Ctrl+V), or use <b>Add images</b>. A zip or JSONL export (ms-swift, LLaMA-Factory, trl), COCO or YOLO labels can be dropped with its images.
      </p>
      {!hasDataset && <p className="muted small">A dataset is created for you on the first drop.</p>}
      {!hasDataset && (
        // With no dataset yet there is no header: the import frame of the new dataset is chosen here.
        <label className="field-inline small">
          <span className="field-label">Imported bbox_2d answers are in</span>
          <select value={frame} onChange={(e) => void setImportFrame(e.target.value as BoxFrame)} data-testid="answer-frame-new">
            {(Object.keys(FRAME_TITLES) as (keyof typeof FRAME_TITLES)[]).map((f) => (
              <option key={f} value={f}>
                {FRAME_TITLES[f]}
              </option>
            ))}
          </select>
        </label>
      )}
      {!hasDataset && (
        <label className="primary-file">
          <input type="file" multiple accept="image/*,.zip,.jsonl,.json,.txt" onChange={(e) => {
            const files = filesFromList(e.currentTarget.files);
            e.currentTarget.value = '';
            void addFiles(files);
          }} />
          Choose files…
        </label>
      )}
    </div>
  );
}

