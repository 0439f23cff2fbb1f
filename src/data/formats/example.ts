// A DatasetRecord + the sizes of its images → the text of a training example, for any front end.
// What needs the image size happens here: ms-swift `<bbox>` placeholders are filled in the resized
// frame (as ms-swift does for Qwen2.5-VL), answers read in another frame ('abs', 'norm1000') get their
// bbox_2d numbers converted, COCO/YOLO boxes become a Qwen2.5-VL answer. Answers already in the
// resized frame are kept exactly as written (no reformatting, no invented labels).

import { scanGroundings, type Box, type Size } from '../bbox.ts';
import type { ChatMessage, ContentPart } from '../template.ts';
import { formatGroundingAnswer } from './answer.ts';
import { fromFilePixels, toFilePixels, type BoxFrame, type ResizeOpts } from './coords.ts';
import type { DatasetRecord } from './parse.ts';

export type ExampleMethod = 'sft' | 'dpo' | 'grpo' | 'ppo';

/** The same shape as train/trainer.ts TrainExample without the decoded images. */
export type ExampleText =
  | { kind: 'sft'; messages: ChatMessage[] }
  | { kind: 'dpo'; prompt: ChatMessage[]; chosen: string; rejected: string }
  | { kind: 'rl'; prompt: ChatMessage[]; reference: { answer?: string; boxes?: Box[] } };

/** A box in `frame` of an image of `size` → Qwen2.5-VL's resized frame (integers, as the model writes them). */
export function toResizedFrame(b: readonly number[], frame: BoxFrame, size: Size, opts: ResizeOpts): Box {
  if (frame === 'resized') return [b[0], b[1], b[2], b[3]];
  const px = toFilePixels({ x1: b[0], y1: b[1], x2: b[2], y2: b[3] }, frame, size.width, size.height, opts);
  const r = fromFilePixels(px, 'resized', size.width, size.height, opts);
  return [r.x1, r.y1, r.x2, r.y2];
}

/** Each `"bbox_2d": [..]` (or `"bbox"`) array in a text, rewritten by `map`; everything else as written. */
function rewriteBoxes(text: string, map: (b: number[]) => number[]): string {
  return text.replace(/(["']bbox(?:_2d)?["']\s*:\s*)\[([^\]]*)\]/g, (all, key: string, body: string) => {
    const nums = body.split(',').map((s) => Number(s.trim()));
    return nums.length === 4 && nums.every(Number.isFinite) ? `${key}[${map(nums).join(', ')}]` : all;
  });
}

/**
 * The example `method` trains on: `sft` needs a conversation with answers; `dpo` a pair; `grpo` and
 * `ppo` a prompt with a reference (a conversation's last answer serves as the reference). Returns a
 * string saying why when the record does not fit the method. `sizes` are the (oriented) sizes of
 * `rec.images` in order; boxes refer to the first image.
 */
export function recordExample(rec: DatasetRecord, method: ExampleMethod, sizes: Size[], opts: ResizeOpts): ExampleText | string {
  const size = sizes[0];
  const frameOf = rec.answerFrame;
  const convert = (b: readonly number[], frame: BoxFrame = frameOf) => {
    if (frame !== 'resized' && !size) throw new NoSize();
    return toResizedFrame(b, frame, size, opts);
  };
  const text = (s: string) => (rec.objects || frameOf === 'resized' ? s : rewriteBoxes(s, (b) => convert(b)));
  try {
    return build(rec, method, convert, text);
  } catch (e) {
    if (e instanceof NoSize) return 'its boxes need the size of an image, and the record has none';
    throw e;
  }
}

class NoSize extends Error {}

function build(rec: DatasetRecord, method: ExampleMethod, convert: (b: readonly number[], frame?: BoxFrame) => Box, text: (s: string) => string): ExampleText | string {
  let bi = 0;
  const messages: ChatMessage[] = rec.messages.map((m) => {
    const parts = (typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : m.content) as ContentPart[];
    const content = parts.map((p): ContentPart => {
      if (p.type !== 'text' || m.role !== 'assistant') return { ...p };
      let t = (p as { text: string }).text;
      if (rec.objects) t = t.replace(/<bbox>/g, () => `[${convert(rec.objects!.boxes[bi++], rec.objects!.frame).join(', ')}]`);
      else t = text(t);
      return { type: 'text', text: t };
    });
    return { role: m.role, content };
  });
  if (rec.fromBoxes) {
    messages.push({ role: 'assistant', content: [{ type: 'text', text: formatGroundingAnswer(rec.boxes.map((b) => {
      const [x1, y1, x2, y2] = convert([b.x1, b.y1, b.x2, b.y2], b.frame);
      return { x1, y1, x2, y2, label: b.label };
    })) }] });
  }
  const plain = (ms: ChatMessage[]) => ms.map((m) => (typeof m.content === 'string' ? m.content : m.content.map((p) => (p.type === 'text' ? (p as { text: string }).text : '')).join('')));
  const kindName = rec.kind === 'sft' ? 'a conversation with answers' : rec.kind === 'preference' ? 'a DPO pair (chosen/rejected)' : 'a prompt without an answer';

  if (method === 'sft') {
    if (rec.kind !== 'sft') return `it is ${kindName}; SFT needs a conversation whose last turn is the assistant's answer`;
    return { kind: 'sft', messages };
  }
  if (method === 'dpo') {
    if (rec.kind !== 'preference') return `it is ${kindName}; DPO needs "chosen" and "rejected" answers (or "rejected_response")`;
    return { kind: 'dpo', prompt: messages, chosen: text(rec.chosen!), rejected: text(rec.rejected!) };
  }
  if (rec.kind === 'preference') return `it is ${kindName}; ${method.toUpperCase()} needs a prompt and a reference answer ("solution")`;
  let prompt = messages;
  let answer = rec.reference !== undefined ? text(rec.reference) : undefined;
  if (rec.kind === 'sft') {
    const last = messages.length - 1;
    if (messages[last]?.role === 'assistant') {
      if (answer === undefined) answer = plain([messages[last]])[0];
      prompt = messages.slice(0, last);
    }
  }
  if (answer === undefined) return `${method.toUpperCase()} needs a reference answer ("solution") to score samples against`;
  const boxes = scanGroundings(answer).groundings.map((g) => g.bbox);
  return { kind: 'rl', prompt, reference: boxes.length ? { boxes, answer } : { answer } };
}
