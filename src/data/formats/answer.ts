// Qwen2.5-VL grounding answers, `{"bbox_2d": [x1, y1, x2, y2], "label": "..."}` objects (a list in a
// ```json fence, as the model itself writes them), through src/data/bbox.ts so training targets,
// exports and the parsing of model answers agree. Coordinates are in the frame of the
// smart-resized image (see coords.ts); this file only formats and parses text.

import { formatGroundings, parseGroundings } from '../bbox.ts';
import type { XYXY } from './coords.ts';

export interface AnswerBox extends XYXY {
  label: string;
}

/** A box without a label is written without one: no label is invented. */
export function formatGroundingAnswer(boxes: AnswerBox[]): string {
  return formatGroundings(boxes.map((b) => ({ bbox: [b.x1, b.y1, b.x2, b.y2], label: b.label || undefined })));
}

/**
 * Boxes out of a dataset or model answer: fenced or not, a single object or a list, amid prose,
 * with trailing commas (bbox.ts parseGroundings). Null when there is none (not a grounding answer).
 */
export function parseGroundingAnswer(text: string): AnswerBox[] | null {
  const gs = parseGroundings(text);
  if (!gs.length) return null;
  return gs.map((g) => ({ x1: g.bbox[0], y1: g.bbox[1], x2: g.bbox[2], y2: g.bbox[3], label: g.label ?? '' }));
}
