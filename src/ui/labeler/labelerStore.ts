// Labeler UI state: view (zoom/pan, kept across images), active class, selection, and one undo
// history per image. Labels themselves live in the dataset store (persisted); every edit goes
// through the history reducer first, then setLabels().

import { create } from 'zustand';
import type { ImageRecord, Labels } from '../../data/formats/types.ts';
import { setLabels } from '../../store/dataset.ts';
import { FIT_VIEW, type View } from './geometry.ts';
import { historyReducer, initHistory, type History, type HistoryAction } from './history.ts';

interface LabelerState {
  view: View;
  /** index into the dataset's classes for new boxes; -1: none */
  activeClass: number;
  selectedId: string | null;
  /** the image order the labeler walks (a snapshot of the grid's filter when it opened) */
  navIds: string[];
  showHelp: boolean;
  /** H toggles the boxes off to see the pixels under them */
  hideBoxes: boolean;
  /** bumps when a history changes (histories are kept outside React state) */
  version: number;
}

export const useLabeler = create<LabelerState>(() => ({
  view: FIT_VIEW,
  activeClass: 0,
  selectedId: null,
  navIds: [],
  showHelp: false,
  hideBoxes: false,
  version: 0,
}));

const histories = new Map<string, History<Labels>>();

/** The image's history; restarted when its labels changed elsewhere (another tab, an import). */
export function historyFor(img: ImageRecord): History<Labels> {
  let h = histories.get(img.id);
  if (!h || h.present !== img.labels) {
    h = initHistory(img.labels);
    histories.set(img.id, h);
  }
  return h;
}

function apply(img: ImageRecord, a: HistoryAction<Labels>): boolean {
  const h = historyFor(img);
  const next = historyReducer(h, a);
  if (next === h) return false;
  if (next.present !== h.present && !setLabels(img.id, next.present)) return false;
  histories.set(img.id, next);
  useLabeler.setState((s) => ({ version: s.version + 1 }));
  return true;
}

export function editLabels(img: ImageRecord, value: Labels, merge?: string): boolean {
  return apply(img, { type: 'set', value, merge });
}

export function commitEdit(img: ImageRecord): void {
  const h = histories.get(img.id);
  if (h) histories.set(img.id, historyReducer(h, { type: 'commit' }));
}

export function undo(img: ImageRecord): boolean {
  const ok = apply(img, { type: 'undo' });
  keepSelection(img);
  return ok;
}

export function redo(img: ImageRecord): boolean {
  const ok = apply(img, { type: 'redo' });
  keepSelection(img);
  return ok;
}

function keepSelection(img: ImageRecord): void {
  const sel = useLabeler.getState().selectedId;
  const h = histories.get(img.id);
  if (sel && h && !h.present.boxes.some((b) => b.id === sel)) useLabeler.setState({ selectedId: null });
}

export function setView(view: View): void {
  useLabeler.setState({ view });
}

export function select(id: string | null): void {
  useLabeler.setState({ selectedId: id });
}
