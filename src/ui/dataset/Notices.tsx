// Notices: results of imports (every problem listed by file and line), undo toasts, storage errors.

import { useEffect, useState } from 'react';
import { dismissNotice, useDatasetStore, type Notice } from '../../store/dataset.ts';

const SHOWN = 8;

function NoticeItem({ n }: { n: Notice }) {
  const [all, setAll] = useState(false);
  useEffect(() => {
    if (!n.ttl) return;
    const t = setTimeout(() => void dismissNotice(n.id), n.ttl);
    return () => clearTimeout(t);
  }, [n.id, n.ttl]);
  const details = n.details ?? [];
  const list = all ? details : details.slice(0, SHOWN);
  return (
    <div className={`notice ${n.level}`} role={n.level === 'error' ? 'alert' : 'status'} data-testid="notice" data-level={n.level}>
      <div className="notice-head">
        <span className="notice-title">{n.title}</span>
        {n.undo && (
          <button className="notice-undo" onClick={() => void dismissNotice(n.id, true)} data-testid="notice-undo">
            Undo
          </button>
        )}
        <button className="link notice-close" aria-label="Dismiss" onClick={() => void dismissNotice(n.id)}>
          ✕
        </button>
      </div>
      {details.length > 0 && (
        <ul className="notice-details" data-testid="notice-details">
          {list.map((d, i) => (
            <li key={i}>{d}</li>
          ))}
          {details.length > SHOWN && (
            <li>
              <button className="link" onClick={() => setAll(!all)}>
                {all ? 'Show fewer' : `Show all ${details.length}`}
              </button>
            </li>
          )}
        </ul>
      )}
    </div>
  );
}

export function Notices() {
  const notices = useDatasetStore((s) => s.notices);
  if (!notices.length) return null;
  return (
    <div className="notices" aria-live="polite">
      {notices.map((n) => (
        <NoticeItem key={n.id} n={n} />
      ))}
    </div>
  );
}
