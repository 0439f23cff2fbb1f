// Task records: what one labelled image means for training, independent of any file format.
// The trainer reads these (store/dataset.ts loadSamples) and every exporter writes them out.
//
// Grounding answers are written in the smart-resized frame of the stored image (the pixels the
// model sees), with the dataset's min/max pixels: stored px * (resizedW / storedW).

import { formatGroundingAnswer, type AnswerBox } from './answer.ts';
import { boxToResized, scanGroundings } from '../bbox.ts';
import { smartResize } from '../image.ts';
import type { ResizeOpts } from './coords.ts';
import { boxQuestion, type DatasetMeta, type ImageRecord, type RewardKind } from './types.ts';

export const DEFAULT_VQA_QUESTION = 'Describe this image.';

/** Supervised pair (grounding and VQA/caption). */
export interface SftRecord {
  kind: 'sft';
  question: string;
  /** grounding: Qwen2.5-VL bbox_2d JSON in the resized frame; vqa: the text answer */
  answer: string;
  /** grounding only: the boxes of this question in stored pixels (for formats that convert themselves) */
  boxes?: AnswerBox[];
}

/** DPO pair. */
export interface PreferenceRecord {
  kind: 'preference';
  prompt: string;
  chosen: string;
  rejected: string;
}

/** GRPO / PPO prompt with the reward to score sampled answers. */
export interface RlRecord {
  kind: 'rl';
  prompt: string;
  reward: RewardKind;
  /** reference answer; for the IoU reward the bbox_2d JSON of `boxes` in the resized frame */
  reference: string;
  /** IoU reward: reference boxes in the resized frame */
  boxes?: AnswerBox[];
}

export type TaskRecord = SftRecord | PreferenceRecord | RlRecord;

/** What each record kind is called in messages (the studio's Train panel and the session's refusals). */
export const KIND_NAMES: Record<TaskRecord['kind'], string> = { sft: 'question/answer (SFT)', preference: 'preference-pair (DPO)', rl: 'prompt + reward (GRPO/PPO)' };

/** The record kind a method trains on: SFT question/answer, DPO pairs, GRPO/PPO prompts. */
export function methodKind(method: 'sft' | 'dpo' | 'grpo' | 'ppo'): TaskRecord['kind'] {
  return method === 'sft' ? 'sft' : method === 'dpo' ? 'preference' : 'rl';
}

/** Whether `method` trains on records of this kind (the engine, the session and the Train panel agree). */
export function methodTakes(kind: TaskRecord['kind'], method: 'sft' | 'dpo' | 'grpo' | 'ppo'): boolean {
  return methodKind(method) === kind;
}

/** The boxes of an image in the model's resized frame. */
export function resizedBoxes(img: Pick<ImageRecord, 'width' | 'height' | 'labels'>, opts: ResizeOpts, boxes = img.labels.boxes): AnswerBox[] {
  const [rh, rw] = smartResize(img.height, img.width, 28, opts.minPixels, opts.maxPixels);
  return boxes.map((b) => {
    const [x1, y1, x2, y2] = boxToResized([b.x1, b.y1, b.x2, b.y2], { width: img.width, height: img.height }, { width: rw, height: rh });
    return { x1, y1, x2, y2, label: b.label.trim() };
  });
}

/**
 * The imported answer text when it still says exactly these boxes (same corners in the resized
 * frame, same labels, same order): answers are kept as written. Otherwise the boxes formatted as
 * Qwen2.5-VL writes them.
 */
export function writtenAnswer(written: string | undefined, boxes: AnswerBox[]): string {
  if (written !== undefined) {
    const s = scanGroundings(written);
    const same = !s.problems.length && s.groundings.length === boxes.length && s.groundings.every((g, i) => {
      const b = boxes[i];
      return g.bbox[0] === b.x1 && g.bbox[1] === b.y1 && g.bbox[2] === b.x2 && g.bbox[3] === b.y2 && (g.label ?? '') === b.label;
    });
    if (same) return written;
  }
  return formatGroundingAnswer(boxes);
}

/** The training records one image contributes under its dataset's kind (possibly none). */
export function taskRecords(ds: Pick<DatasetMeta, 'kind' | 'minPixels' | 'maxPixels' | 'reward'>, img: Pick<ImageRecord, 'width' | 'height' | 'labels'>): TaskRecord[] {
  const l = img.labels;
  switch (ds.kind) {
    case 'grounding': {
      // Boxes sharing a question become one answer with a list of boxes.
      const groups = new Map<string, typeof l.boxes>();
      for (const b of l.boxes) {
        const q = boxQuestion(b);
        const g = groups.get(q);
        if (g) g.push(b);
        else groups.set(q, [b]);
      }
      return [...groups].map(([question, boxes]) => ({
        kind: 'sft' as const,
        question,
        answer: writtenAnswer(l.written?.[question], resizedBoxes(img, ds, boxes)),
        boxes: boxes.map((b) => ({ x1: b.x1, y1: b.y1, x2: b.x2, y2: b.y2, label: b.label.trim() })),
      }));
    }
    case 'vqa':
      if (!l.answer.trim()) return [];
      return [{ kind: 'sft', question: l.question.trim() || DEFAULT_VQA_QUESTION, answer: l.answer }];
    case 'preference':
      if (!l.chosen.trim() || !l.rejected.trim()) return [];
      return [{ kind: 'preference', prompt: l.question.trim() || DEFAULT_VQA_QUESTION, chosen: l.chosen, rejected: l.rejected }];
    case 'rl': {
      const prompt = l.question.trim() || (l.boxes[0] ? boxQuestion(l.boxes[0]) : '');
      if (!prompt) return [];
      if (ds.reward === 'iou') {
        if (!l.boxes.length) return [];
        const boxes = resizedBoxes(img, ds);
        return [{ kind: 'rl', prompt, reward: ds.reward, reference: formatGroundingAnswer(boxes), boxes }];
      }
      if (!l.answer.trim() && ds.reward === 'exact') return [];
      return [{ kind: 'rl', prompt, reward: ds.reward, reference: l.answer }];
    }
  }
}
