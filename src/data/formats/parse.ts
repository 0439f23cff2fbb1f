// One JSON record of any supported chat/preference format → a ParsedSample. The shapes are told
// apart by their keys, so a file needs no format flag:
//
//   ms-swift      {"messages": [{"role", "content": str}], "images": [...], "objects"?, "rejected_response"?, "solution"?}
//                 {"query", "response", "images"|"image", "rejected_response"?}
//   LLaMA-Factory {"messages"|"conversations": [{"role","content"}|{"from","value"}], "images": [...]}
//                 preference: {"conversations": [...], "chosen": {"from","value"}, "rejected": {...}, "images"}
//   trl           {"messages": [{"role", "content": [{"type":"image"},{"type":"text","text"}]}], "images"}
//                 preference: {"prompt": [...], "chosen": [...], "rejected": [...], "images"}
//                 prompt-only (GRPO): {"prompt": [...], "images", "solution"|"reference"|"answer"?}
//
// Coordinates (explicit, per convention):
// - ms-swift `objects` ({"ref": [...], "bbox": [[x1,y1,x2,y2], ...], "bbox_type"?}): absolute pixels of
//   the original image ('real', ms-swift's default) or 0..1000 when bbox_type is 'norm1000'; the
//   `<ref-object>` / `<bbox>` placeholders in the messages are filled from them in order.
// - a Qwen2.5-VL answer `{"bbox_2d": [...], "label"}` (any format): in the frame chosen by
//   `answerFrame` — 'resized' (Qwen2.5-VL's own: pixels of the smart-resized image; default),
//   'abs' (original pixels, as many hand-made datasets write them) or 'norm1000' (Qwen2-VL).

import { parseGroundingAnswer } from './answer.ts';
import type { BoxFrame } from './coords.ts';
import { isObj, type LineError } from './jsonl.ts';
import type { TaskKind } from './types.ts';

export interface ParsedBox {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
  frame: BoxFrame;
  label: string;
  question: string;
}

export interface ParsedSample {
  file: string;
  line: number;
  /** image reference as written (path, URL or data: URI) */
  image: string;
  kind: TaskKind;
  question: string;
  answer: string;
  chosen: string;
  rejected: string;
  boxes: ParsedBox[];
  /** 'abs' boxes refer to an image of this [width, height] (COCO states it; rescaled if the file differs) */
  stated?: [number, number];
}

export interface ParseOpts {
  /** frame of bbox_2d answers; see the header */
  answerFrame: BoxFrame;
}

export const DEFAULT_PARSE_OPTS: ParseOpts = { answerFrame: 'resized' };

interface Turn {
  role: 'system' | 'user' | 'assistant';
  text: string;
}

type Result = { sample: ParsedSample; warnings: string[] } | { error: LineError };

export function parseRecord(value: Record<string, unknown>, file: string, line: number, opts: ParseOpts = DEFAULT_PARSE_OPTS): Result {
  const fail = (reason: string): Result => ({ error: { file, line, reason } });
  const warnings: string[] = [];
  const where = `${file ? file + ' ' : ''}line ${line}`;

  // Image reference.
  const imgs = imagesOf(value);
  if (typeof imgs === 'string') return fail(imgs);
  if (imgs.length === 0) return fail('no image: expected "images": ["path"] (or "image")');
  if (imgs.length > 1) warnings.push(`${where}: ${imgs.length} images; only the first is used`);

  // Conversation.
  let turns: Turn[];
  let chosen = '';
  let rejected = '';
  let hasPreference = false;
  let reference: string | undefined;
  try {
    if (Array.isArray(value.prompt) || typeof value.prompt === 'string') {
      // trl: prompt (+ chosen/rejected, or a prompt-only RL record)
      turns = toTurns(value.prompt);
      if (value.chosen !== undefined || value.rejected !== undefined) {
        chosen = answerText(value.chosen, 'chosen');
        rejected = answerText(value.rejected, 'rejected');
        hasPreference = true;
      } else if (value.completion !== undefined) {
        turns.push({ role: 'assistant', text: answerText(value.completion, 'completion') });
      }
    } else if (Array.isArray(value.messages) || Array.isArray(value.conversations)) {
      turns = toTurns(value.messages ?? value.conversations);
      if (value.chosen !== undefined || value.rejected !== undefined) {
        // LLaMA-Factory preference: chosen/rejected are single {"from","value"} messages.
        chosen = answerText(value.chosen, 'chosen');
        rejected = answerText(value.rejected, 'rejected');
        hasPreference = true;
      } else if (value.rejected_response !== undefined) {
        // ms-swift DPO: the last assistant turn is chosen.
        const last = turns.length && turns[turns.length - 1].role === 'assistant' ? turns.pop()! : undefined;
        if (!last) throw new Error('rejected_response given but the conversation does not end with an assistant turn');
        chosen = last.text;
        rejected = str(value.rejected_response, 'rejected_response');
        hasPreference = true;
      }
    } else if (value.query !== undefined) {
      turns = [{ role: 'user', text: str(value.query, 'query') }];
      if (value.response !== undefined) turns.push({ role: 'assistant', text: str(value.response, 'response') });
      if (value.rejected_response !== undefined) {
        chosen = turns.length > 1 ? turns.pop()!.text : '';
        rejected = str(value.rejected_response, 'rejected_response');
        hasPreference = true;
      }
    } else {
      return fail('unknown record shape: expected "messages", "conversations", "query"/"response" or "prompt"');
    }
    for (const k of ['solution', 'reference', 'ground_truth']) {
      if (value[k] !== undefined) reference = typeof value[k] === 'string' ? (value[k] as string) : JSON.stringify(value[k]);
    }
  } catch (e) {
    return fail((e as Error).message);
  }

  // ms-swift grounding placeholders.
  let objects: { refs: string[]; boxes: number[][]; frame: BoxFrame } | null = null;
  if (value.objects !== undefined && value.objects !== null) {
    const o = objectsOf(value.objects);
    if (typeof o === 'string') return fail(o);
    objects = o;
  }

  const users = turns.filter((t) => t.role === 'user');
  if (users.length === 0) return fail('no user turn (the question)');
  const sample: ParsedSample = { file, line, image: imgs[0], kind: 'vqa', question: '', answer: '', chosen, rejected, boxes: [] };

  if (objects) {
    // Fill <ref-object> and <bbox> in order through the whole conversation; each <bbox> in an
    // assistant turn is a box answering the user turn before it.
    let ri = 0;
    let bi = 0;
    let question = '';
    const refAt = (i: number) => objects!.refs[Math.min(i, objects!.refs.length - 1)] ?? '';
    for (const t of turns) {
      if (t.role === 'system') continue;
      let text = t.text.replace(/<ref-object>/g, () => refAt(ri++));
      if (t.role === 'user') {
        question = cleanQuestion(text);
        if (!sample.question) sample.question = question;
        continue;
      }
      text = text.replace(/<bbox>/g, () => {
        const b = objects!.boxes[bi];
        if (b) sample.boxes.push({ x1: b[0], y1: b[1], x2: b[2], y2: b[3], frame: objects!.frame, label: refAt(bi), question });
        bi++;
        return b ? `[${b.join(', ')}]` : '';
      });
      if (!sample.answer) sample.answer = text;
    }
    // Objects without <bbox> placeholders: all boxes answer the first question.
    for (; bi < objects.boxes.length; bi++) {
      const b = objects.boxes[bi];
      sample.boxes.push({ x1: b[0], y1: b[1], x2: b[2], y2: b[3], frame: objects.frame, label: refAt(bi), question: sample.question });
    }
    if (sample.boxes.length) sample.kind = 'grounding';
  } else {
    // Pair user/assistant turns; assistant answers holding bbox_2d JSON are grounding boxes.
    let question = '';
    let pairs = 0;
    for (const t of turns) {
      if (t.role === 'user') question = cleanQuestion(t.text);
      if (t.role !== 'assistant') continue;
      pairs++;
      const boxes = parseGroundingAnswer(t.text);
      if (boxes) {
        for (const b of boxes) sample.boxes.push({ ...b, frame: opts.answerFrame, question });
        if (!sample.question) sample.question = question;
      } else if (!sample.answer) {
        sample.question = question;
        sample.answer = t.text;
      } else {
        warnings.push(`${where}: extra text turn ignored (one question/answer per image)`);
      }
    }
    if (!sample.question) sample.question = cleanQuestion(users[0].text);
    if (sample.boxes.length) sample.kind = 'grounding';
    if (pairs === 0 && !hasPreference) sample.kind = 'rl';
  }

  if (hasPreference) {
    if (!chosen.trim() || !rejected.trim()) return fail('chosen and rejected answers must both be non-empty');
    sample.kind = 'preference';
  } else if (reference !== undefined) {
    const boxes = parseGroundingAnswer(reference);
    if (boxes && sample.boxes.length === 0) {
      for (const b of boxes) sample.boxes.push({ ...b, frame: opts.answerFrame, question: sample.question });
    }
    if (!boxes) sample.answer = reference;
    sample.kind = 'rl';
  }
  for (const b of sample.boxes) {
    if (![b.x1, b.y1, b.x2, b.y2].every(Number.isFinite)) return fail('a box has non-numeric coordinates');
  }
  return { sample, warnings };
}

/** Strips image placeholders (`<image>`, Qwen's vision tokens) from a prompt. */
export function cleanQuestion(s: string): string {
  return s
    .replace(/<image>|<\|vision_start\|>|<\|image_pad\|>|<\|vision_end\|>/g, '')
    .trim();
}

function imagesOf(v: Record<string, unknown>): string[] | string {
  const raw = v.images ?? v.image;
  if (raw === undefined || raw === null) return [];
  const list = Array.isArray(raw) ? raw : [raw];
  const out: string[] = [];
  for (const it of list) {
    if (typeof it === 'string') out.push(it);
    else if (isObj(it) && typeof it.path === 'string') out.push(it.path);
    else if (isObj(it) && typeof it.url === 'string') out.push(it.url);
    else return '"images" must hold path strings';
  }
  return out;
}

function str(v: unknown, name: string): string {
  if (typeof v !== 'string') throw new Error(`"${name}" must be a string`);
  return v;
}

/** Text of a message content: a string, or trl's list of {"type": "text"|"image"} parts. */
function contentText(c: unknown, where: string): string {
  if (typeof c === 'string') return c;
  if (Array.isArray(c)) {
    return c
      .map((p) => {
        if (typeof p === 'string') return p;
        if (isObj(p) && p.type === 'text' && typeof p.text === 'string') return p.text;
        if (isObj(p) && (p.type === 'image' || p.type === 'image_url')) return '';
        throw new Error(`${where}: unknown content part ${JSON.stringify(p).slice(0, 60)}`);
      })
      .join('');
  }
  throw new Error(`${where}: content must be a string or a list of parts`);
}

const ROLE: Record<string, Turn['role']> = {
  user: 'user', human: 'user', system: 'system', assistant: 'assistant', gpt: 'assistant', model: 'assistant', bot: 'assistant',
};

function toTurns(v: unknown): Turn[] {
  if (typeof v === 'string') return [{ role: 'user', text: v }];
  if (!Array.isArray(v)) throw new Error('messages must be a list');
  return v.map((m, i) => {
    if (!isObj(m)) throw new Error(`message ${i + 1} is not an object`);
    const roleName = String(m.role ?? m.from ?? '');
    const role = ROLE[roleName];
    if (!role) throw new Error(`message ${i + 1}: unknown role "${roleName}"`);
    const text = contentText(m.content ?? m.value, `message ${i + 1}`);
    return { role, text };
  });
}

/** chosen / rejected / completion: a string, one message, or a list of (assistant) messages. */
function answerText(v: unknown, name: string): string {
  if (typeof v === 'string') return v;
  if (isObj(v)) return contentText(v.content ?? v.value, name);
  if (Array.isArray(v)) {
    const turns = toTurns(v);
    const last = [...turns].reverse().find((t) => t.role === 'assistant') ?? turns[turns.length - 1];
    if (!last) throw new Error(`"${name}" is empty`);
    return last.text;
  }
  throw new Error(`"${name}" must be a string, a message or a list of messages`);
}

function objectsOf(raw: unknown): { refs: string[]; boxes: number[][]; frame: BoxFrame } | string {
  let o = raw;
  if (typeof o === 'string') {
    try {
      o = JSON.parse(o);
    } catch {
      return '"objects" is a string that is not JSON';
    }
  }
  const frameOf = (t: unknown): BoxFrame | string =>
    t === undefined || t === 'real' ? 'abs' : t === 'norm1000' ? 'norm1000' : t === 'norm1' ? 'norm1' : `unknown bbox_type "${String(t)}"`;
  const checkBox = (b: unknown): number[] | string =>
    Array.isArray(b) && b.length === 4 && b.every((x) => typeof x === 'number' && Number.isFinite(x)) ? (b as number[]) : `bbox must be 4 numbers, got ${JSON.stringify(b)?.slice(0, 60)}`;
  if (isObj(o)) {
    // {"ref": [...], "bbox": [[...]], "bbox_type"?}
    const refs = Array.isArray(o.ref) ? o.ref.map(String) : [];
    const list = Array.isArray(o.bbox) ? o.bbox : [];
    // A single flat box [x1,y1,x2,y2] is allowed.
    const boxesRaw = list.length === 4 && list.every((x) => typeof x === 'number') ? [list] : list;
    const boxes: number[][] = [];
    for (const b of boxesRaw) {
      const c = checkBox(b);
      if (typeof c === 'string') return `objects: ${c}`;
      boxes.push(c);
    }
    const frame = frameOf(o.bbox_type);
    if (!['abs', 'norm1', 'norm1000'].includes(frame)) return `objects: ${frame}`;
    return { refs, boxes, frame: frame as BoxFrame };
  }
  if (Array.isArray(o)) {
    // Older ms-swift: [{"caption"|"ref", "bbox", "bbox_type"}]
    const refs: string[] = [];
    const boxes: number[][] = [];
    let frame: BoxFrame = 'abs';
    for (const it of o) {
      if (!isObj(it)) return 'objects: items must be objects';
      const c = checkBox(it.bbox);
      if (typeof c === 'string') return `objects: ${c}`;
      const f = frameOf(it.bbox_type);
      if (!['abs', 'norm1', 'norm1000'].includes(f)) return `objects: ${f}`;
      frame = f as BoxFrame;
      refs.push(String(it.caption ?? it.ref ?? ''));
      boxes.push(c);
    }
    return { refs, boxes, frame };
  }
  return '"objects" must be {"ref": [...], "bbox": [...]}';
}
