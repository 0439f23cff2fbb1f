// Scoring of predictions, pure (no stores, no worker) so it is unit-tested in Node: the questions of
// an image, an answer's IoU against the labelled boxes of its question, the mean over answers.
import type { Box as XYXY } from '../data/bbox.ts';
import { boxesIou } from '../train/rewards.ts';
import { boxQuestion, type ImageRecord } from '../data/formats/types.ts';
import type { GenerateResult } from '../worker/api.ts';

/** One answer, scored: `noBox` when boxes were labelled but the answer holds none that parses. */
export type Scored = GenerateResult & { iou: number | null; noBox: boolean };

/**
 * IoU of an answer's boxes against the labelled ones, as training's IoU reward and evaluation score
 * it (train/rewards.ts boxesIou): one labelled box, the first predicted box's IoU; several, matched
 * one to one, summed IoU over the larger count (missing and extra boxes both cost). null when
 * nothing is labelled.
 */
export function matchedIou(labelled: XYXY[], predicted: XYXY[]): number | null {
  return labelled.length ? boxesIou(labelled, predicted) : null;
}

/**
 * The questions asked of an image, each with its labelled boxes in original pixels: one per distinct
 * box question (in the order the boxes were drawn), else the image's own question.
 */
export function questionsOf(img: Pick<ImageRecord, 'labels' | 'scale'>): { question: string; boxes: XYXY[] }[] {
  const b = img.labels.boxes;
  if (!b.length) return [{ question: img.labels.question.trim() || 'Describe this image.', boxes: [] }];
  const groups = new Map<string, XYXY[]>();
  for (const x of b) {
    const q = boxQuestion(x);
    const box: XYXY = [x.x1 * img.scale, x.y1 * img.scale, x.x2 * img.scale, x.y2 * img.scale];
    const g = groups.get(q);
    if (g) g.push(box);
    else groups.set(q, [box]);
  }
  return [...groups].map(([question, boxes]) => ({ question, boxes }));
}

/** An answer against the labelled boxes of its question: IoU (null when none are labelled), and whether it held no box. */
export function scoreAnswer(labelled: XYXY[], g: GenerateResult): Scored {
  const predicted = g.boxes.map((b) => b.bbox);
  return { ...g, iou: matchedIou(labelled, predicted), noBox: labelled.length > 0 && predicted.length === 0 };
}

/** Mean IoU over the answers that were scored (an answer without a box counts 0). */
export function meanIou(results: { adapter?: Scored; base?: Scored }[], which: 'adapter' | 'base'): number | null {
  const v = results.map((r) => r[which]?.iou).filter((x): x is number => typeof x === 'number');
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
}
