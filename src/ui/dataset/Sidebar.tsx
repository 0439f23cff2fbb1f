// The datasets list: create, open, rename (double-click or ✎), delete (with undo).

import { useState } from 'react';
import { TASK_KINDS } from '../../data/formats/types.ts';
import { PencilIcon, TrashIcon } from './icons.tsx';
import { createDataset, deleteDataset, openDataset, renameDataset, useDatasetStore } from '../../store/dataset.ts';

function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const u = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${u[i]}`;
}

export function Sidebar() {
  const datasets = useDatasetStore((s) => s.datasets);
  const counts = useDatasetStore((s) => s.counts);
  const currentId = useDatasetStore((s) => s.currentId);
  const usage = useDatasetStore((s) => s.usage);
  const [editing, setEditing] = useState<string | null>(null);
  const [draft, setDraft] = useState('');

  const startRename = (id: string, name: string) => {
    setEditing(id);
    setDraft(name);
  };
  const finish = (id: string) => {
    if (draft.trim()) void renameDataset(id, draft);
    setEditing(null);
  };

  return (
    <aside className="ds-sidebar" data-testid="dataset-sidebar">
      <div className="ds-sidebar-head">
        <h2>Datasets</h2>
        <button onClick={() => void createDataset()} data-testid="new-dataset" title="Create an empty dataset">
          + New
        </button>
      </div>
      <ul className="ds-list">
        {datasets.map((d) => (
          <li key={d.id} className={d.id === currentId ? 'ds-item active' : 'ds-item'} data-testid="dataset-item" data-dataset-id={d.id}>
            {editing === d.id ? (
              <input
                autoFocus
                value={draft}
                aria-label="Dataset name"
                data-testid="dataset-rename-input"
                onChange={(e) => setDraft(e.target.value)}
                onBlur={() => finish(d.id)}
                onKeyDown={(e) => {
                  if (e.key === 'Enter') finish(d.id);
                  if (e.key === 'Escape') setEditing(null);
                }}
              />
            ) : (
              <button className="ds-open" onClick={() => void openDataset(d.id)} onDoubleClick={() => startRename(d.id, d.name)} title="Open (double-click to rename)">
                <span className="ds-name">{d.name}</span>
                <span className="ds-meta muted small">
                  {counts[d.id] ?? 0} image{counts[d.id] === 1 ? '' : 's'} · {TASK_KINDS.find((k) => k.kind === d.kind)?.title}
                </span>
              </button>
            )}
            <span className="ds-actions">
              <button className="link" title="Rename" aria-label={`Rename ${d.name}`} onClick={() => startRename(d.id, d.name)}>
                <PencilIcon />
              </button>
              <button className="link danger" title="Delete (undo available)" aria-label={`Delete ${d.name}`} data-testid="delete-dataset" onClick={() => void deleteDataset(d.id)}>
                <TrashIcon />
              </button>
            </span>
          </li>
        ))}
      </ul>
      {!datasets.length && <p className="muted small">No datasets yet. Drop images anywhere on this screen to start one.</p>}
      {usage && usage.quota > 0 && (
        <div className="storage" title="Browser storage used by this site (IndexedDB)">
          <div className="storage-bar">
            <span style={{ width: `${Math.min(100, (usage.used / usage.quota) * 100)}%` }} />
          </div>
          <span className="muted small">
            {fmtBytes(usage.used)} of {fmtBytes(usage.quota)} used
          </span>
        </div>
      )}
    </aside>
  );
}
