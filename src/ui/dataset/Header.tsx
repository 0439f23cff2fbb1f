// The open dataset's header: name, task kind, settings (classes, min/max pixels, reward), and the
// add / import / export actions.

import { useRef, useState } from 'react';
import { EXPORT_FORMATS, type ExportFormat } from '../../data/formats/export.ts';
import { REWARD_KINDS, TASK_KINDS, type DatasetMeta, type TaskKind } from '../../data/formats/types.ts';
import { smartResize } from '../../data/image.ts';
import type { BoxFrame } from '../../data/formats/coords.ts';
import { addFiles, exportCurrent, FRAME_TITLES, importFrame, notify, setImportFrame, updateDataset, useDatasetStore } from '../../store/dataset.ts';
import { filesFromList } from './files.ts';

const PIXEL_PRESETS: { label: string; min: number; max: number }[] = [
  { label: 'Small (max 256 tokens)', min: 56 * 56, max: 256 * 28 * 28 },
  { label: 'Medium (max 512 tokens)', min: 56 * 56, max: 512 * 28 * 28 },
  { label: 'Default (max 1280 tokens)', min: 56 * 56, max: 1280 * 28 * 28 },
  { label: 'Large (max 4096 tokens)', min: 56 * 56, max: 4096 * 28 * 28 },
];

export function Header({ ds, readOnly }: { ds: DatasetMeta; readOnly: boolean }) {
  const [panel, setPanel] = useState<null | 'settings' | 'import' | 'export'>(null);
  const images = useRef<HTMLInputElement>(null);
  const folder = useRef<HTMLInputElement>(null);
  const toggle = (p: 'settings' | 'import' | 'export') => setPanel(panel === p ? null : p);
  return (
    <div className="ds-header">
      <div className="ds-header-row">
        <input
          className="ds-title"
          size={Math.max(6, Math.min(28, ds.name.length + 1))}
          key={ds.id + ds.name}
          defaultValue={ds.name}
          aria-label="Dataset name"
          data-testid="dataset-name"
          disabled={readOnly}
          onBlur={(e) => e.target.value.trim() && e.target.value !== ds.name && void updateDataset(ds.id, { name: e.target.value })}
          onKeyDown={(e) => e.key === 'Enter' && (e.target as HTMLInputElement).blur()}
        />
        <span className="spacer" />
        <button onClick={() => images.current?.click()} disabled={readOnly} data-testid="add-images">
          Add images
        </button>
        <button onClick={() => folder.current?.click()} disabled={readOnly} title="Add every image of a folder (and its subfolders)">
          Add folder
        </button>
        <button className={panel === 'import' ? 'active' : ''} onClick={() => toggle('import')} disabled={readOnly} data-testid="import-button">
          Import…
        </button>
        <button className={panel === 'export' ? 'active' : ''} onClick={() => toggle('export')} data-testid="export-button">
          Export…
        </button>
        <button className={panel === 'settings' ? 'active' : ''} onClick={() => toggle('settings')} title="Classes, image size for the model, reward" data-testid="settings-button">
          Settings
        </button>
        <input ref={images} type="file" multiple accept="image/*" hidden data-testid="file-input" onChange={(e) => void pick(e.currentTarget)} />
        <input ref={folder} type="file" multiple hidden data-testid="folder-input" {...{ webkitdirectory: '', directory: '' }} onChange={(e) => void pick(e.currentTarget)} />
      </div>
      <div className="ds-header-row kind-row">
        <span className="field-label">Task</span>
        <div className="segmented" role="radiogroup" aria-label="Task kind" data-testid="task-kind">
          {TASK_KINDS.map((k) => (
            <button key={k.kind} role="radio" aria-checked={ds.kind === k.kind} className={ds.kind === k.kind ? 'seg active' : 'seg'} title={k.hint} disabled={readOnly} onClick={() => void updateDataset(ds.id, { kind: k.kind as TaskKind })}>
              {k.title}
            </button>
          ))}
        </div>
        <span className="muted small">{TASK_KINDS.find((k) => k.kind === ds.kind)?.hint}</span>
      </div>
      {panel === 'settings' && <Settings ds={ds} readOnly={readOnly} />}
      <div className="ds-header-row kind-row">
        <FrameSelect ds={ds} readOnly={readOnly} />
      </div>
      {panel === 'import' && <ImportPanel ds={ds} onDone={() => setPanel(null)} />}
      {panel === 'export' && <ExportPanel ds={ds} />}
    </div>
  );
}

async function pick(input: HTMLInputElement, opts?: { newDataset?: boolean }) {
  const files = filesFromList(input.files);
  input.value = '';
  await addFiles(files, opts);
}

function Settings({ ds, readOnly }: { ds: DatasetMeta; readOnly: boolean }) {
  const [classes, setClasses] = useState(ds.classes.join(', '));
  const [h, w] = (() => {
    try {
      return smartResize(768, 1024, 28, ds.minPixels, ds.maxPixels);
    } catch {
      return [0, 0];
    }
  })();
  const preset = PIXEL_PRESETS.findIndex((p) => p.min === ds.minPixels && p.max === ds.maxPixels);
  return (
    <div className="ds-panel card">
      <div className="grid">
        <label className="field wide">
          <span className="field-label">Classes</span>
          <input
            value={classes}
            disabled={readOnly}
            placeholder="cat, dog, car"
            data-testid="classes-setting"
            onChange={(e) => setClasses(e.target.value)}
            onBlur={() => void updateDataset(ds.id, { classes: [...new Set(classes.split(',').map((s) => s.trim()).filter(Boolean))] })}
          />
          <span className="field-help">Number keys 1–9 pick the first nine in the labeler.</span>
        </label>
        <label className="field">
          <span className="field-label">Image size for the model</span>
          <select
            value={preset}
            disabled={readOnly}
            onChange={(e) => {
              const p = PIXEL_PRESETS[Number(e.target.value)];
              if (p) void updateDataset(ds.id, { minPixels: p.min, maxPixels: p.max });
            }}
          >
            {preset < 0 && <option value={-1}>Custom</option>}
            {PIXEL_PRESETS.map((p, i) => (
              <option key={i} value={i}>
                {p.label}
              </option>
            ))}
          </select>
          <span className="field-help">
            A 1024×768 photo becomes {w}×{h} ({(w * h) / (28 * 28)} image tokens). Boxes are written in this resized frame; train and infer with the same values.
          </span>
        </label>
        <label className="field">
          <span className="field-label">min_pixels</span>
          <input type="number" min={28 * 28} step={28 * 28} value={ds.minPixels} disabled={readOnly} onChange={(e) => Number(e.target.value) > 0 && void updateDataset(ds.id, { minPixels: Number(e.target.value) })} />
        </label>
        <label className="field">
          <span className="field-label">max_pixels</span>
          <input type="number" min={28 * 28} step={28 * 28} value={ds.maxPixels} disabled={readOnly} onChange={(e) => Number(e.target.value) >= ds.minPixels && void updateDataset(ds.id, { maxPixels: Number(e.target.value) })} />
        </label>
        {ds.kind === 'rl' && (
          <label className="field">
            <span className="field-label">Reward</span>
            <select value={ds.reward} disabled={readOnly} onChange={(e) => void updateDataset(ds.id, { reward: e.target.value as DatasetMeta['reward'] })}>
              {REWARD_KINDS.map((r) => (
                <option key={r.kind} value={r.kind}>
                  {r.title}
                </option>
              ))}
            </select>
            <span className="field-help">{REWARD_KINDS.find((r) => r.kind === ds.reward)?.hint}</span>
          </label>
        )}
      </div>
    </div>
  );
}

/**
 * How bbox_2d answers of imported files are read: shown on the dataset's header at all times, since
 * it applies to every way in (drop on the grid, Add images, Import…, paste, zips).
 */
function FrameSelect({ ds, readOnly, testId = 'answer-frame' }: { ds: DatasetMeta; readOnly: boolean; testId?: string }) {
  useDatasetStore((s) => s.answerFrame);
  const frame = importFrame(ds);
  return (
    <label className="field-inline" title="Applies to every import into this dataset: drop, pick, paste, zip. ms-swift objects and COCO/YOLO state their own coordinates.">
      <span className="field-label">Imported bbox_2d answers are in</span>{' '}
      <select value={frame} disabled={readOnly} onChange={(e) => void setImportFrame(e.target.value as BoxFrame)} data-testid={testId}>
        {(Object.keys(FRAME_TITLES) as (keyof typeof FRAME_TITLES)[]).map((f) => (
          <option key={f} value={f}>
            {FRAME_TITLES[f]}
          </option>
        ))}
      </select>
    </label>
  );
}

function ImportPanel({ ds, onDone }: { ds: DatasetMeta; onDone(): void }) {
  const [asNew, setAsNew] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  return (
    <div className="ds-panel card" data-testid="import-panel">
      <p className="help" style={{ marginTop: 0 }}>
        Pick a <b>zip</b> (images + JSONL), or a <b>JSONL / JSON</b> file together with its images (select them all, or drop the whole folder on the grid).
        Read: ms-swift (messages, query/response, <code>objects</code> with <code>&lt;ref-object&gt;</code>/<code>&lt;bbox&gt;</code>), LLaMA-Factory sharegpt, trl (messages, prompt/chosen/rejected),
        COCO detection JSON, YOLO (<code>labels/*.txt</code> + <code>classes.txt</code>), Patchwork exports. Bad lines are reported by number; the good ones are imported.
      </p>
      <div className="row">
        <FrameSelect ds={ds} readOnly={false} testId="import-frame" />
        <label className="toggle-inline">
          <input type="checkbox" checked={asNew} onChange={(e) => setAsNew(e.target.checked)} /> into a new dataset
        </label>
        <button
          className="primary"
          onClick={() => input.current?.click()}
          data-testid="import-pick"
        >
          Choose files…
        </button>
        <input
          ref={input}
          type="file"
          multiple
          hidden
          accept=".zip,.jsonl,.json,.txt,.yaml,.yml,.names,image/*"
          data-testid="import-input"
          onChange={(e) => {
            onDone();
            void pick(e.currentTarget, { newDataset: asNew });
          }}
        />
      </div>
    </div>
  );
}

function ExportPanel({ ds }: { ds: DatasetMeta }) {
  const formats = EXPORT_FORMATS.filter((f) => f.kinds.includes(ds.kind));
  const [format, setFormat] = useState<ExportFormat>(formats[0]?.format ?? 'swift');
  const [withImages, setWithImages] = useState(true);
  const [busy, setBusy] = useState(false);
  const fmt = formats.find((f) => f.format === format) ?? formats[0];
  const run = async () => {
    setBusy(true);
    try {
      const r = await exportCurrent(fmt.format, withImages);
      if (!r) return;
      const a = document.createElement('a');
      a.href = URL.createObjectURL(r.blob);
      a.download = r.filename;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
      notify({ level: r.warnings.length ? 'warn' : 'success', title: `Exported ${r.filename}`, details: r.warnings, ttl: r.warnings.length ? undefined : 4000 });
    } catch (e) {
      notify({ level: 'error', title: `Export failed: ${(e as Error).message}` });
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="ds-panel card" data-testid="export-panel">
      <div className="row">
        <label className="field">
          <span className="field-label">Format</span>
          <select value={fmt.format} onChange={(e) => setFormat(e.target.value as ExportFormat)} data-testid="export-format">
            {formats.map((f) => (
              <option key={f.format} value={f.format}>
                {f.title}
              </option>
            ))}
          </select>
        </label>
        <label className="toggle-inline">
          <input type="checkbox" checked={withImages} onChange={(e) => setWithImages(e.target.checked)} /> with images (zip)
        </label>
        <button className="primary" onClick={() => void run()} disabled={busy} data-testid="export-run">
          {busy ? 'Exporting…' : 'Download'}
        </button>
      </div>
      <p className="help">{fmt.hint}. Paths inside are <code>images/&lt;name&gt;</code>.</p>
    </div>
  );
}
