// Dataset records shared by the store (IndexedDB), the labeler and the import/export formats.
//
// Coordinate frames used throughout (names appear in comments and in `BoxFrame`):
// - stored   : pixels of the image Blob we keep. Boxes are persisted in this frame.
// - original : pixels of the file the user gave us. stored == original unless the image was
//              larger than MAX_SIDE and got downscaled at import; then original = stored * scale.
//              The labeler shows coordinates in this frame.
// - resized  : pixels of the smart-resized image the model sees (multiples of 28 within
//              [minPixels, maxPixels], computed from the stored size). Qwen2.5-VL answers
//              `{"bbox_2d": [x1, y1, x2, y2], "label": "..."}` in this frame.
// - norm1    : fractions of width/height (YOLO).      norm1000: 0..1000 (Qwen2-VL, ms-swift norm1000).
// All boxes are [x1, y1, x2, y2] with x1 < x2, y1 < y2 (x right, y down, origin top-left corner).

import { DEFAULT_IMAGE_CONFIG } from '../image.ts';
import type { BoxFrame } from './coords.ts';

export type TaskKind = 'grounding' | 'vqa' | 'preference' | 'rl';
export type RewardKind = 'iou' | 'format' | 'exact';

export const TASK_KINDS: { kind: TaskKind; title: string; hint: string }[] = [
  { kind: 'grounding', title: 'Grounding', hint: 'question → box; answered as {"bbox_2d": [...], "label": ...} (SFT)' },
  { kind: 'vqa', title: 'VQA / caption', hint: 'a question and a text answer per image (SFT)' },
  { kind: 'preference', title: 'DPO pairs', hint: 'prompt, chosen and rejected answers (DPO)' },
  { kind: 'rl', title: 'GRPO / PPO', hint: 'prompt, reference answer and a reward (GRPO / PPO)' },
];

export const REWARD_KINDS: { kind: RewardKind; title: string; hint: string }[] = [
  { kind: 'iou', title: 'IoU', hint: 'mean IoU of predicted boxes against the reference boxes' },
  { kind: 'format', title: 'Format', hint: '1 when the answer parses as bbox_2d JSON' },
  { kind: 'exact', title: 'Exact match', hint: '1 when the answer equals the reference (trimmed, case-insensitive)' },
];

/** The data engineer's defaults (56*56 .. 1280*28*28); Qwen2.5-VL's hub processor allows up to 16384*28*28. */
export const DEFAULT_MIN_PIXELS = DEFAULT_IMAGE_CONFIG.minPixels;
export const DEFAULT_MAX_PIXELS = DEFAULT_IMAGE_CONFIG.maxPixels;
/** Images larger than this on a side are downscaled at import (with a notice). */
export const MAX_SIDE = 4096;

export interface Box {
  id: string;
  /** stored-image pixels */
  x1: number;
  y1: number;
  x2: number;
  y2: number;
  label: string;
  /** the grounding question for this box; empty → a default question from the label */
  question: string;
}

/** Everything a person labels on one image; which fields matter depends on the dataset's kind. */
export interface Labels {
  /** grounding: the boxes; rl with the IoU reward: the reference boxes */
  boxes: Box[];
  /** vqa: question; preference / rl: the prompt */
  question: string;
  /** vqa: answer; rl: reference answer */
  answer: string;
  chosen: string;
  rejected: string;
  /**
   * grounding answers as they were written in an imported file (resized frame), by question
   * (boxQuestion): trained and exported verbatim while that question's boxes are unchanged
   */
  written?: Record<string, string>;
}

export interface DatasetMeta {
  id: string;
  name: string;
  kind: TaskKind;
  /** label classes, number keys 1-9 pick the first nine */
  classes: string[];
  minPixels: number;
  maxPixels: number;
  reward: RewardKind;
  /** how bbox_2d answers of imported files are read, for every import route (absent: 'resized') */
  answerFrame?: BoxFrame;
  createdAt: number;
  updatedAt: number;
  /** soft delete (undo window); purged later */
  deletedAt?: number;
}

export interface ImageRecord {
  id: string;
  datasetId: string;
  /** relative path as given (folder/name.png) */
  name: string;
  type: string;
  /** stored Blob size in pixels */
  width: number;
  height: number;
  origWidth: number;
  origHeight: number;
  /** original / stored (>= 1; 1 unless downscaled at import) */
  scale: number;
  bytes: number;
  /** SHA-256 of the file as added (hex): the same image added again is matched, not duplicated */
  hash?: string;
  /** SHA-256 of the stored Blob when it differs from the file (oriented or downscaled): re-imports of an export match too */
  storedHash?: string;
  /** insertion order inside the dataset */
  order: number;
  addedAt: number;
  labels: Labels;
  deletedAt?: number;
}

export function emptyLabels(): Labels {
  return { boxes: [], question: '', answer: '', chosen: '', rejected: '' };
}

export function newDataset(name: string, kind: TaskKind = 'grounding', now = Date.now()): DatasetMeta {
  return {
    id: uid('ds'),
    name,
    kind,
    classes: [],
    minPixels: DEFAULT_MIN_PIXELS,
    maxPixels: DEFAULT_MAX_PIXELS,
    reward: 'iou',
    createdAt: now,
    updatedAt: now,
  };
}

let counter = 0;
export function uid(prefix: string): string {
  counter = (counter + 1) % 1e6;
  return `${prefix}_${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}${counter.toString(36)}`;
}

/** Is this image done for its dataset's kind? (filters labelled / unlabelled) */
export function isLabelled(kind: TaskKind, l: Labels, reward: RewardKind = 'iou'): boolean {
  switch (kind) {
    case 'grounding':
      return l.boxes.length > 0;
    case 'vqa':
      return l.answer.trim() !== '';
    case 'preference':
      return l.chosen.trim() !== '' && l.rejected.trim() !== '';
    case 'rl':
      return reward === 'iou' ? l.boxes.length > 0 : l.question.trim() !== '' && l.answer.trim() !== '';
  }
}

/** The question asked for a box when the labeller left it empty (Qwen2.5-VL cookbook style). */
export function defaultQuestion(label: string): string {
  const what = label.trim() || 'object';
  return `Locate the ${what} in the image and output its bbox coordinates in JSON format.`;
}

export function boxQuestion(b: Box): string {
  return b.question.trim() || defaultQuestion(b.label);
}

/** Natural sort key compare: img2 < img10. */
export function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, undefined, { numeric: true, sensitivity: 'base' });
}

export const IMAGE_EXT = /\.(png|jpe?g|webp|gif|bmp|avif|ico|tiff?)$/i;

export function baseName(path: string): string {
  const i = path.replace(/\\/g, '/').lastIndexOf('/');
  return i < 0 ? path : path.slice(i + 1);
}

export function stemName(path: string): string {
  const b = baseName(path);
  const i = b.lastIndexOf('.');
  return i <= 0 ? b : b.slice(0, i);
}

const MIME: Record<string, string> = {
  png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', webp: 'image/webp', gif: 'image/gif', bmp: 'image/bmp',
  avif: 'image/avif', ico: 'image/x-icon', tif: 'image/tiff', tiff: 'image/tiff',
};

export function mimeOf(path: string): string {
  const ext = /\.([^./]+)$/.exec(path)?.[1]?.toLowerCase() ?? '';
  return MIME[ext] ?? '';
}

/** One file offered to an import (a dropped file, a folder entry, a zip member). */
export interface SourceFile {
  /** relative path ('folder/a.png'); unique within one import */
  path: string;
  size: number;
  /** MIME type when known */
  type: string;
  bytes(): Promise<Uint8Array>;
  /** the browser File/Blob when there is one (saves a copy) */
  blob?: Blob;
}
