// The one reader of dataset records, for the CLI and the studio. One JSON record of any supported
// chat/preference format → a DatasetRecord (the conversation with its images placed, the answers as
// written, every box with its frame), with EVERY problem of the record at once. The shapes are told
// apart by their keys, so a file needs no format flag:
//
//   ms-swift      {"messages": [{"role", "content": str}], "images": [...], "objects"?, "rejected_response"?, "solution"?}
//                 {"query", "response", "history"?, "system"?, "images"|"image", "rejected_response"?}
//   LLaMA-Factory {"messages"|"conversations": [{"role","content"}|{"from","value"}], "images": [...], "system"?}
//                 preference: {"conversations": [...], "chosen": {"from","value"}, "rejected": {...}, "images"}
//   trl           {"messages": [{"role", "content": [{"type":"image"},{"type":"text","text"}]}], "images"}
//                 preference: {"prompt": [...], "chosen": [...], "rejected": [...], "images"}
//                 prompt-only (GRPO): {"prompt": [...], "images", "solution"|"reference"|"ground_truth"?}
//                 prompt + completion: {"prompt": [...], "completion": [...], "images"}
//   transformers chat format: image parts naming their file ({"type": "image", "image": "a.png"}), no "images"
//   the cluster bundle's data.jsonl is the trl form above, paths relative to the JSONL's folder.
//
// Images: `<image>` in a text (or Qwen's <|vision_start|><|image_pad|><|vision_end|>) or trl's
// {"type": "image"} parts mark where an image goes; with neither, the images go before the first
// user text. Paths are resolved against the dataset file's folder and may not leave it (paths.ts).
//
// Coordinates (explicit, per convention):
// - ms-swift `objects` ({"ref": [...], "bbox": [[x1,y1,x2,y2], ...], "bbox_type"?}): absolute pixels of
//   the original image ('real', ms-swift's default) or 0..1000 when bbox_type is 'norm1000'; the
//   `<ref-object>` placeholders are filled from `ref` here, the `<bbox>` ones when the image size is
//   known (examples.ts: recordExample), converted into the resized frame as ms-swift does for Qwen2.5-VL.
// - a Qwen2.5-VL answer `{"bbox_2d": [...], "label"}` (any format): in the frame chosen by
//   `answerFrame` — 'resized' (Qwen2.5-VL's own: pixels of the smart-resized image; default),
//   'abs' (original pixels, as many hand-made datasets write them) or 'norm1000' (Qwen2-VL).
// Answers are kept as written: nothing is reformatted or relabelled here.

import { scanGroundings } from '../bbox.ts';
import type { ChatMessage, ContentPart } from '../template.ts';
import type { BoxFrame } from './coords.ts';
import { isObj, type LineError } from './jsonl.ts';
import { isDataUri, resolveImagePath } from './paths.ts';
import type { TaskKind } from './types.ts';

export interface ParsedBox {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
  frame: BoxFrame;
  /** as written; '' when the answer gave none (no label is invented) */
  label: string;
  question: string;
  /** the assistant text the box was read from (kept verbatim by the studio while the box is unchanged) */
  answer?: string;
}

/** A box of a record, where it was written (for messages naming it). */
export interface RecordBox extends ParsedBox {
  /** 'message 2', 'objects.bbox[0]', 'solution', ... */
  where: string;
}

export interface DatasetRecord {
  file: string;
  line: number;
  /** image paths joined with the dataset file's folder and normalised (or data: URIs), in order */
  images: string[];
  /** the references as written */
  written: string[];
  /** from the record's shape: a conversation with answers, a DPO pair, or a prompt for GRPO/PPO */
  kind: 'sft' | 'preference' | 'rl';
  /** sft: the whole conversation; preference / rl: the prompt. Images are {"type":"image"} parts. */
  messages: ChatMessage[];
  chosen?: string;
  rejected?: string;
  /** the reference answer (solution / reference / ground_truth) as written */
  reference?: string;
  /** ms-swift objects; the assistant texts still hold their `<bbox>` placeholders */
  objects?: { refs: string[]; boxes: number[][]; frame: BoxFrame };
  /** every box of the record, in order */
  boxes: RecordBox[];
  /** the frame bbox_2d answers of this record are read in (ParseOpts.answerFrame) */
  answerFrame: BoxFrame;
  /** COCO / YOLO: no text; the user asks for each label and the answer is formatted from `boxes` */
  fromBoxes?: boolean;
}

export interface ParsedSample {
  file: string;
  line: number;
  /** image reference (resolved path, or a data: URI) */
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

type Role = ChatMessage['role'];

const ROLE: Record<string, Role> = {
  user: 'user', human: 'user', system: 'system', assistant: 'assistant', gpt: 'assistant', model: 'assistant', bot: 'assistant',
};

const IMAGE_TAG = /<image>|<\|vision_start\|><\|image_pad\|><\|vision_end\|>/g;

/** Strips image placeholders (`<image>`, Qwen's vision tokens) from a prompt. */
export function cleanQuestion(s: string): string {
  return s.replace(/<image>|<\|vision_start\|>|<\|image_pad\|>|<\|vision_end\|>/g, '').trim();
}

/** The text of a message (image parts left out). */
export function messageText(m: ChatMessage): string {
  return typeof m.content === 'string' ? m.content : m.content.map((p) => (p.type === 'text' ? (p as { text: string }).text : '')).join('');
}

/**
 * One JSON record → a DatasetRecord, or every problem it has (each naming file and line).
 * `warnings` are things kept but worth saying.
 */
export function readRecord(value: Record<string, unknown>, file: string, line: number, opts: ParseOpts = DEFAULT_PARSE_OPTS): { record?: DatasetRecord; problems: LineError[]; warnings: string[] } {
  const problems: LineError[] = [];
  const warnings: string[] = [];
  const bad = (reason: string) => problems.push({ file, line, reason });

  // Images: the record's "images" (or "image"), else the paths inside image parts
  // ({"type": "image", "image": "a.png"}, as transformers' chat format writes them).
  const written: string[] = [];
  const images: string[] = [];
  const addImage = (ref: string) => {
    written.push(ref);
    if (isDataUri(ref)) return images.push(ref);
    const r = resolveImagePath(ref, file);
    if (r.error !== undefined) bad(r.error);
    else images.push(r.path);
  };
  const raw = value.images ?? value.image;
  if (raw !== undefined && raw !== null) {
    (Array.isArray(raw) ? raw : [raw]).forEach((it, i) => {
      const ref = typeof it === 'string' ? it : isObj(it) && typeof it.path === 'string' ? it.path : isObj(it) && typeof it.url === 'string' ? it.url : isObj(it) && typeof it.image === 'string' ? it.image : undefined;
      if (ref === undefined) return bad(`"images"[${i}] must be a path string (or {"path": ...}), got ${JSON.stringify(it)?.slice(0, 60)}`);
      addImage(ref);
    });
  }
  const inline: string[] = [];
  const partsOf = (c: unknown, where: string, report: (r: string) => void) => contentParts(c, where, report, inline);

  // Conversation turns (text with image markers), then the answers.
  const turns: { role: Role; parts: ContentPart[]; where: string }[] = [];
  let chosen: string | undefined;
  let rejected: string | undefined;
  let preference = false;
  const turnsOf = (v: unknown, name: string) => {
    if (typeof v === 'string') return [{ role: 'user' as Role, parts: partsOf(v, name, bad), where: name }];
    if (!Array.isArray(v)) {
      bad(`"${name}" must be a list of messages`);
      return [];
    }
    const out: typeof turns = [];
    v.forEach((m, i) => {
      const where = `${name}[${i}]`;
      if (!isObj(m)) return bad(`${where} is not an object`);
      const roleName = String(m.role ?? m.from ?? '');
      const role = ROLE[roleName];
      if (!role) return bad(`${where}: unknown role "${roleName}" (expected user/assistant/system, or human/gpt)`);
      const content = m.content ?? m.value;
      out.push({ role, parts: partsOf(content, where, bad), where });
    });
    return out;
  };
  const answerOf = (v: unknown, name: string): string | undefined => {
    if (typeof v === 'string') return v;
    if (isObj(v)) return textOf(partsOf(v.content ?? v.value, name, bad));
    if (Array.isArray(v)) {
      const t = turnsOf(v, name);
      const last = [...t].reverse().find((x) => x.role === 'assistant') ?? t[t.length - 1];
      if (!last) {
        bad(`"${name}" is an empty list`);
        return undefined;
      }
      return textOf(last.parts);
    }
    bad(`"${name}" must be a string, a message or a list of messages`);
    return undefined;
  };

  if (typeof value.system === 'string') turns.push({ role: 'system', parts: [{ type: 'text', text: value.system }], where: 'system' });
  if (value.prompt !== undefined && (Array.isArray(value.prompt) || typeof value.prompt === 'string')) {
    turns.push(...turnsOf(value.prompt, 'prompt'));
    if (value.chosen !== undefined || value.rejected !== undefined) {
      chosen = answerOf(value.chosen, 'chosen');
      rejected = answerOf(value.rejected, 'rejected');
      preference = true;
    } else if (value.completion !== undefined) {
      const c = answerOf(value.completion, 'completion');
      if (c !== undefined) turns.push({ role: 'assistant', parts: [{ type: 'text', text: c }], where: 'completion' });
    }
  } else if (Array.isArray(value.messages) || Array.isArray(value.conversations)) {
    const name = Array.isArray(value.messages) ? 'messages' : 'conversations';
    turns.push(...turnsOf(value[name], name));
    if (value.chosen !== undefined || value.rejected !== undefined) {
      // LLaMA-Factory preference: chosen/rejected are single {"from","value"} messages.
      chosen = answerOf(value.chosen, 'chosen');
      rejected = answerOf(value.rejected, 'rejected');
      preference = true;
    } else if (value.rejected_response !== undefined) {
      // ms-swift DPO: the last assistant turn is the chosen answer.
      const last = turns.length && turns[turns.length - 1].role === 'assistant' ? turns.pop()! : undefined;
      if (!last) bad('"rejected_response" is given but the conversation does not end with an assistant turn (the chosen answer)');
      else chosen = textOf(last.parts);
      rejected = typeof value.rejected_response === 'string' ? value.rejected_response : (bad('"rejected_response" must be a string'), undefined);
      preference = true;
    }
  } else if (value.query !== undefined) {
    if (Array.isArray(value.history)) {
      value.history.forEach((h, i) => {
        if (!Array.isArray(h) || h.length !== 2 || typeof h[0] !== 'string' || typeof h[1] !== 'string') return bad(`"history"[${i}] must be a [query, response] pair of strings`);
        turns.push({ role: 'user', parts: partsOf(h[0], `history[${i}][0]`, bad), where: `history[${i}][0]` }, { role: 'assistant', parts: [{ type: 'text', text: h[1] }], where: `history[${i}][1]` });
      });
    }
    if (typeof value.query !== 'string') bad('"query" must be a string');
    else turns.push({ role: 'user', parts: partsOf(value.query, 'query', bad), where: 'query' });
    if (value.response !== undefined) {
      if (typeof value.response !== 'string') bad('"response" must be a string');
      else turns.push({ role: 'assistant', parts: [{ type: 'text', text: value.response }], where: 'response' });
    }
    if (value.rejected_response !== undefined) {
      const last = turns.length && turns[turns.length - 1].role === 'assistant' ? turns.pop()! : undefined;
      if (!last) bad('"rejected_response" is given without a "response" (the chosen answer)');
      else chosen = textOf(last.parts);
      rejected = typeof value.rejected_response === 'string' ? value.rejected_response : (bad('"rejected_response" must be a string'), undefined);
      preference = true;
    }
  } else {
    bad('unknown record shape: expected "messages", "conversations", "query"/"response" or "prompt"');
    return { problems, warnings };
  }
  let reference: string | undefined;
  for (const k of ['solution', 'reference', 'ground_truth']) {
    if (value[k] !== undefined && value[k] !== null) reference = typeof value[k] === 'string' ? (value[k] as string) : JSON.stringify(value[k]);
  }

  if (raw === undefined || raw === null) inline.forEach(addImage);
  else if (inline.length && inline.join('\u0000') !== written.join('\u0000')) bad(`the image parts name ${inline.map((x) => JSON.stringify(x)).join(', ')} but "images" holds ${written.map((x) => JSON.stringify(x)).join(', ') || 'nothing'}`);

  // Images into the turns: explicit markers must match the number of images.
  const marked = turns.reduce((n, t) => n + t.parts.filter((p) => p.type === 'image').length, 0);
  if (marked === 0 && written.length) {
    const first = turns.find((t) => t.role === 'user');
    if (first) first.parts.unshift(...written.map(() => ({ type: 'image' as const })));
  } else if (marked !== written.length) {
    bad(`${marked} image marker${marked === 1 ? '' : 's'} (<image> or {"type": "image"}) but ${written.length} image${written.length === 1 ? '' : 's'} in "images"`);
  }

  // Checks that need no image: a question, non-empty answers, a DPO pair that differs.
  const users = turns.filter((t) => t.role === 'user');
  // (Not said when a turn could not be read: that problem is already named.)
  const readable = problems.length === 0;
  if (users.length === 0 && readable) bad('no user turn (the question)');
  else if (readable && turns.find((t) => t.role !== 'system')?.role === 'assistant') bad(`${turns.find((t) => t.role !== 'system')!.where}: the conversation starts with the assistant; it must start with a user turn`);
  turns.forEach((t) => {
    if (t.role === 'assistant' && textOf(t.parts).trim() === '') bad(`${t.where}: the assistant answer is empty`);
  });
  if (preference) {
    if (chosen !== undefined && chosen.trim() === '') bad('the chosen answer is empty');
    if (rejected !== undefined && rejected.trim() === '') bad('the rejected answer is empty');
    if (chosen !== undefined && rejected !== undefined && chosen.trim() !== '' && chosen.trim() === rejected.trim()) bad('chosen and rejected are the same answer; DPO learns nothing from the pair');
  }

  // ms-swift objects: fill <ref-object> now; <bbox> needs the image size (recordExample).
  let objects: DatasetRecord['objects'];
  if (value.objects !== undefined && value.objects !== null) {
    const o = objectsOf(value.objects);
    if (typeof o === 'string') bad(o);
    else objects = o;
  }
  const boxes: RecordBox[] = [];
  let question = '';
  if (objects) {
    let ri = 0;
    let bi = 0;
    const refAt = (i: number) => objects!.refs[Math.min(i, objects!.refs.length - 1)] ?? '';
    for (const t of turns) {
      if (t.role === 'system') continue;
      for (const p of t.parts) if (p.type === 'text') p.text = p.text.replace(/<ref-object>/g, () => refAt(ri++));
      const text = textOf(t.parts);
      if (t.role === 'user') {
        question = cleanQuestion(text);
        continue;
      }
      for (const _ of text.matchAll(/<bbox>/g)) {
        const b = objects.boxes[bi];
        if (b) boxes.push({ x1: b[0], y1: b[1], x2: b[2], y2: b[3], frame: objects.frame, label: refAt(bi), question, where: `objects.bbox[${bi}]` });
        else bad(`${t.where}: <bbox> number ${bi + 1} has no box in "objects" (${objects.boxes.length} given)`);
        bi++;
      }
    }
    // Objects without <bbox> placeholders (grounding captions): all boxes answer the first question.
    const firstQ = cleanQuestion(textOf(users[0]?.parts ?? []));
    for (let k = bi; k < objects.boxes.length; k++) {
      const b = objects.boxes[k];
      boxes.push({ x1: b[0], y1: b[1], x2: b[2], y2: b[3], frame: objects.frame, label: refAt(k), question: firstQ, where: `objects.bbox[${k}]` });
    }
  } else {
    for (const t of turns) {
      if (t.role === 'user') question = cleanQuestion(textOf(t.parts));
      if (t.role !== 'assistant') continue;
      const s = scanGroundings(textOf(t.parts));
      for (const p of s.problems) bad(`${t.where}: ${p}`);
      const answer = textOf(t.parts);
      for (const g of s.groundings) boxes.push({ x1: g.bbox[0], y1: g.bbox[1], x2: g.bbox[2], y2: g.bbox[3], frame: opts.answerFrame, label: g.label ?? '', question, where: t.where, answer });
    }
  }
  const lastUserQ = cleanQuestion(textOf(users[users.length - 1]?.parts ?? []));
  for (const [name, text] of [['chosen', chosen], ['rejected', rejected], ['solution', reference]] as const) {
    if (text === undefined) continue;
    const s = scanGroundings(text);
    for (const p of s.problems) bad(`${name}: ${p}`);
    // Boxes of the reference are what the IoU reward scores; chosen/rejected boxes are only checked.
    if (name === 'solution' && boxes.length === 0) for (const g of s.groundings) boxes.push({ x1: g.bbox[0], y1: g.bbox[1], x2: g.bbox[2], y2: g.bbox[3], frame: opts.answerFrame, label: g.label ?? '', question: lastUserQ, where: name });
  }
  if (written.length > 1) warnings.push(`${file ? file + ' ' : ''}line ${line}: ${written.length} images`);

  const hasAnswer = turns.some((t) => t.role === 'assistant');
  const kind: DatasetRecord['kind'] = preference ? 'preference' : hasAnswer ? 'sft' : 'rl';
  if (problems.length) return { problems, warnings };
  const messages: ChatMessage[] = turns.map((t) => ({ role: t.role, content: t.parts }));
  const record: DatasetRecord = { file, line, images, written, kind, messages, boxes, answerFrame: opts.answerFrame };
  if (preference) Object.assign(record, { chosen, rejected });
  if (reference !== undefined) record.reference = reference;
  if (objects) record.objects = objects;
  return { record, problems, warnings };
}

/** A content value → parts: a string (its <image> tags become image parts) or trl's list of parts. */
function contentParts(c: unknown, where: string, bad: (r: string) => void, inline: string[]): ContentPart[] {
  const fromText = (s: string): ContentPart[] => {
    const out: ContentPart[] = [];
    const pieces = s.split(IMAGE_TAG);
    pieces.forEach((p, i) => {
      if (i > 0) out.push({ type: 'image' });
      if (p) out.push({ type: 'text', text: p });
    });
    return out;
  };
  if (typeof c === 'string') return fromText(c);
  if (Array.isArray(c)) {
    const out: ContentPart[] = [];
    c.forEach((p, i) => {
      if (typeof p === 'string') out.push(...fromText(p));
      else if (isObj(p) && p.type === 'text' && typeof p.text === 'string') out.push({ type: 'text', text: p.text });
      else if (isObj(p) && (p.type === 'image' || p.type === 'image_url')) {
        const ref = typeof p.image === 'string' ? p.image : typeof p.path === 'string' ? p.path : typeof p.url === 'string' ? p.url : isObj(p.image_url) && typeof p.image_url.url === 'string' ? p.image_url.url : undefined;
        if (ref !== undefined) inline.push(ref);
        out.push({ type: 'image' });
      }
      else bad(`${where}: content part ${i + 1} is not {"type": "text", "text": ...} or {"type": "image"}: ${JSON.stringify(p)?.slice(0, 60)}`);
    });
    return out;
  }
  bad(`${where}: content must be a string or a list of parts, got ${c === undefined ? 'nothing' : JSON.stringify(c)?.slice(0, 40)}`);
  return [];
}

function textOf(parts: ContentPart[]): string {
  return parts.map((p) => (p.type === 'text' ? (p as { text: string }).text : '')).join('');
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
    t === undefined || t === 'real' ? 'abs' : t === 'norm1000' ? 'norm1000' : t === 'norm1' ? 'norm1' : `unknown bbox_type "${String(t)}" (expected real or norm1000)`;
  const checkBox = (b: unknown, i: number): number[] | string =>
    Array.isArray(b) && b.length === 4 && b.every((x) => typeof x === 'number' && Number.isFinite(x))
      ? (b as number[])
      : `objects.bbox[${i}] must be 4 numbers [x1, y1, x2, y2], got ${JSON.stringify(b)?.slice(0, 60)}`;
  if (isObj(o)) {
    const refs = Array.isArray(o.ref) ? o.ref.map(String) : typeof o.ref === 'string' ? [o.ref] : [];
    const list = Array.isArray(o.bbox) ? o.bbox : [];
    // A single flat box [x1,y1,x2,y2] is allowed.
    const boxesRaw = list.length === 4 && list.every((x) => typeof x === 'number') ? [list] : list;
    const boxes: number[][] = [];
    const errs: string[] = [];
    boxesRaw.forEach((b, i) => {
      const c = checkBox(b, i);
      if (typeof c === 'string') errs.push(c);
      else boxes.push(c);
    });
    const frame = frameOf(o.bbox_type);
    if (!['abs', 'norm1', 'norm1000'].includes(frame)) errs.push(`objects: ${frame}`);
    if (errs.length) return errs.join('; ');
    return { refs, boxes, frame: frame as BoxFrame };
  }
  if (Array.isArray(o)) {
    // Older ms-swift: [{"caption"|"ref", "bbox", "bbox_type"}]
    const refs: string[] = [];
    const boxes: number[][] = [];
    let frame: BoxFrame = 'abs';
    const errs: string[] = [];
    o.forEach((it, i) => {
      if (!isObj(it)) return errs.push(`objects[${i}] is not an object`);
      const c = checkBox(it.bbox, i);
      if (typeof c === 'string') return errs.push(c);
      const f = frameOf(it.bbox_type);
      if (!['abs', 'norm1', 'norm1000'].includes(f)) return errs.push(`objects[${i}]: ${f}`);
      frame = f as BoxFrame;
      refs.push(String(it.caption ?? it.ref ?? ''));
      boxes.push(c);
    });
    if (errs.length) return errs.join('; ');
    return { refs, boxes, frame };
  }
  return '"objects" must be {"ref": [...], "bbox": [...]}';
}

type Result = { sample: ParsedSample; warnings: string[] } | { error: LineError; errors: LineError[] };

/**
 * The studio's view of a record: one image, one question/answer (or the boxes with their
 * questions), as readRecord read it. `error` is the first problem, `errors` all of them.
 */
export function parseRecord(value: Record<string, unknown>, file: string, line: number, opts: ParseOpts = DEFAULT_PARSE_OPTS): Result {
  const r = readRecord(value, file, line, opts);
  const errors = [...r.problems];
  if (r.record && r.record.images.length === 0) errors.push({ file, line, reason: 'no image: expected "images": ["path"] (or "image")' });
  if (errors.length || !r.record) return { error: errors[0], errors };
  return { sample: toSample(r.record), warnings: r.warnings.map((w) => `${w}; only the first is used`) };
}

/** A DatasetRecord → the studio's ParsedSample (first image; boxes with their questions; the first text answer). */
export function toSample(rec: DatasetRecord): ParsedSample {
  const s: ParsedSample = { file: rec.file, line: rec.line, image: rec.images[0] ?? '', kind: 'vqa', question: '', answer: '', chosen: rec.chosen ?? '', rejected: rec.rejected ?? '', boxes: rec.boxes.map(({ where: _w, ...b }) => b) };
  let question = '';
  for (const m of rec.messages) {
    if (m.role === 'user') question = cleanQuestion(messageText(m));
    if (m.role !== 'assistant') continue;
    const text = messageText(m);
    const boxy = rec.objects ? /<bbox>/.test(text) : scanGroundings(text).groundings.length > 0;
    if (boxy) {
      if (!s.question) s.question = question;
    } else if (!s.answer) {
      s.question = question;
      s.answer = text;
    }
  }
  const firstUser = rec.messages.find((m) => m.role === 'user');
  if (!s.question && firstUser) s.question = cleanQuestion(messageText(firstUser));
  if (s.boxes.length) s.kind = 'grounding';
  if (rec.kind === 'preference') s.kind = 'preference';
  else if (rec.kind === 'rl') {
    s.kind = 'rl';
    if (rec.reference !== undefined && scanGroundings(rec.reference).groundings.length === 0) s.answer = rec.reference;
  } else if (rec.reference !== undefined) {
    // A conversation with a solution column (ms-swift GRPO): a prompt plus its reference.
    s.kind = 'rl';
    if (scanGroundings(rec.reference).groundings.length === 0) s.answer = rec.reference;
  }
  return s;
}
