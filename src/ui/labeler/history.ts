// Undo/redo as a pure reducer over one image's labels (boxes + text). Edits that arrive with the
// same `merge` key in a row (typing a question, dragging) become one undo step.

export interface History<T> {
  past: T[];
  present: T;
  future: T[];
  /** merge key of the last edit; null after undo/redo/commit */
  lastKey: string | null;
}

export type HistoryAction<T> =
  | { type: 'set'; value: T; merge?: string }
  | { type: 'undo' }
  | { type: 'redo' }
  /** ends merging (e.g. the text field lost focus) */
  | { type: 'commit' }
  | { type: 'reset'; value: T };

export const HISTORY_LIMIT = 200;

export function initHistory<T>(value: T): History<T> {
  return { past: [], present: value, future: [], lastKey: null };
}

export function historyReducer<T>(h: History<T>, a: HistoryAction<T>): History<T> {
  switch (a.type) {
    case 'set': {
      if (a.value === h.present) return h;
      if (a.merge && a.merge === h.lastKey) return { ...h, present: a.value, future: [] };
      const past = [...h.past, h.present];
      if (past.length > HISTORY_LIMIT) past.shift();
      return { past, present: a.value, future: [], lastKey: a.merge ?? null };
    }
    case 'undo': {
      if (!h.past.length) return h;
      return { past: h.past.slice(0, -1), present: h.past[h.past.length - 1], future: [h.present, ...h.future], lastKey: null };
    }
    case 'redo': {
      if (!h.future.length) return h;
      return { past: [...h.past, h.present], present: h.future[0], future: h.future.slice(1), lastKey: null };
    }
    case 'commit':
      return h.lastKey === null ? h : { ...h, lastKey: null };
    case 'reset':
      return initHistory(a.value);
  }
}

export const canUndo = <T,>(h: History<T>) => h.past.length > 0;
export const canRedo = <T,>(h: History<T>) => h.future.length > 0;
