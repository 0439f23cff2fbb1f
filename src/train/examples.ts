// Dataset records (one JSON object per JSONL line) → TrainExamples, for the headless CLI and for
// scripted runs. Accepted shapes, as ms-swift / LLaMA-Factory / trl write them:
//   SFT   {"messages": [{role, content}], "images": [...]}          (ms-swift, trl)
//         {"query": "...", "response": "...", "images": [...]}        (ms-swift query/response)
//         {"conversations": [{from: human|gpt, value}], "images": []} (LLaMA-Factory sharegpt)
//   DPO   messages/query form + "rejected_response" (ms-swift), or
//         {"prompt", "chosen", "rejected", "images"} as strings or message lists (trl)
//   GRPO  messages/query/prompt form + "solution" (the reference answer; boxes in it are in the
//         resized frame, like the model's own answers)
// `<image>` in a text marks where an image goes; without one, images go before the first user text.
// Answers are taken verbatim: grounding answers are already in the smart-resized frame.
import { parseGroundings } from '../data/bbox.ts';
import type { RawImage } from '../data/image.ts';
import type { ChatMessage, ContentPart } from '../data/template.ts';
import type { Method, TrainExample } from './trainer.ts';

export class RecordError extends Error {
  constructor(readonly line: number, message: string) {
    super(`line ${line}: ${message}`);
    this.name = 'RecordError';
  }
}

type Json = Record<string, unknown>;

function userContent(text: string, nImages: number, placeImages: boolean): string | ContentPart[] {
  const parts: ContentPart[] = [];
  const pieces = text.split('<image>');
  if (pieces.length > 1) {
    pieces.forEach((p, i) => {
      if (i > 0) parts.push({ type: 'image' });
      if (p) parts.push({ type: 'text', text: p });
    });
    return parts;
  }
  if (!placeImages || !nImages) return text;
  for (let i = 0; i < nImages; i++) parts.push({ type: 'image' });
  parts.push({ type: 'text', text });
  return parts;
}

function asMessages(v: unknown, line: number): { role: string; content: string }[] {
  if (typeof v === 'string') return [{ role: 'user', content: v }];
  if (!Array.isArray(v)) throw new RecordError(line, 'expected a list of messages');
  return v.map((m, i) => {
    const o = m as Json;
    const role = (o.role ?? ({ human: 'user', gpt: 'assistant', system: 'system' } as Record<string, string>)[String(o.from)]) as string;
    const content = o.content ?? o.value;
    if (!role || typeof content !== 'string') throw new RecordError(line, `message ${i} needs a role and a text content`);
    return { role, content };
  });
}

function toChat(raw: { role: string; content: string }[], nImages: number, line: number): ChatMessage[] {
  let placed = false;
  const explicit = raw.some((m) => m.content.includes('<image>'));
  const used = raw.reduce((s, m) => s + (m.content.split('<image>').length - 1), 0);
  if (explicit && used !== nImages) throw new RecordError(line, `${used} <image> tags but ${nImages} images`);
  return raw.map((m) => {
    if (m.role !== 'user' && m.role !== 'assistant' && m.role !== 'system') throw new RecordError(line, `unknown role "${m.role}"`);
    const place = m.role === 'user' && !placed && !explicit;
    if (place) placed = true;
    return { role: m.role, content: m.role === 'user' ? userContent(m.content, nImages, place) : m.content };
  });
}

/** The conversation of a record: messages / conversations / query(+history)+response / prompt. */
function conversation(r: Json, line: number): { role: string; content: string }[] {
  if (r.messages) return asMessages(r.messages, line);
  if (r.conversations) return asMessages(r.conversations, line);
  const out: { role: string; content: string }[] = [];
  if (typeof r.system === 'string') out.push({ role: 'system', content: r.system });
  for (const h of (r.history as [string, string][] | undefined) ?? []) out.push({ role: 'user', content: h[0] }, { role: 'assistant', content: h[1] });
  const q = r.query ?? r.prompt;
  if (typeof q === 'string') out.push({ role: 'user', content: q });
  else if (Array.isArray(q)) out.push(...asMessages(q, line));
  else throw new RecordError(line, 'no "messages", "conversations", "query" or "prompt"');
  if (typeof r.response === 'string') out.push({ role: 'assistant', content: r.response });
  return out;
}

function completionText(v: unknown, line: number, key: string): string {
  if (typeof v === 'string') return v;
  const msgs = asMessages(v, line).filter((m) => m.role === 'assistant');
  if (!msgs.length) throw new RecordError(line, `"${key}" has no assistant message`);
  return msgs[msgs.length - 1].content;
}

export function imagePaths(r: Json): string[] {
  const v = r.images ?? r.image;
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map((x) => (typeof x === 'string' ? x : String((x as Json).path ?? '')));
}

/** One record → a TrainExample for `method`; `images` are the record's decoded images in order. */
export function recordToExample(r: Json, images: RawImage[], method: Method, line: number): TrainExample {
  const conv = conversation(r, line);
  if (method === 'sft') {
    if (!conv.some((m) => m.role === 'assistant')) throw new RecordError(line, 'no assistant answer to train on');
    return { kind: 'sft', images, messages: toChat(conv, images.length, line) };
  }
  // Prompt = the conversation up to (not including) the final assistant answer.
  const lastAssistant = conv.length && conv[conv.length - 1].role === 'assistant' ? conv.length - 1 : conv.length;
  const prompt = toChat(conv.slice(0, lastAssistant), images.length, line);
  if (method === 'dpo') {
    const chosen = r.chosen !== undefined ? completionText(r.chosen, line, 'chosen') : lastAssistant < conv.length ? conv[lastAssistant].content : undefined;
    const rejected = r.rejected !== undefined ? completionText(r.rejected, line, 'rejected') : (r.rejected_response as string | undefined);
    if (typeof chosen !== 'string' || typeof rejected !== 'string') throw new RecordError(line, 'DPO needs a chosen answer and a rejected one ("chosen"/"rejected" or "response"/"rejected_response")');
    return { kind: 'dpo', images, prompt, chosen, rejected };
  }
  const solution = r.solution ?? (lastAssistant < conv.length ? conv[lastAssistant].content : undefined);
  if (typeof solution !== 'string') throw new RecordError(line, 'GRPO needs a reference answer ("solution")');
  const boxes = parseGroundings(solution).map((g) => g.bbox);
  return { kind: 'rl', images, prompt, reference: boxes.length ? { boxes, answer: solution } : { answer: solution } };
}

/**
 * Parse JSONL text. Bad lines are collected (line number + reason) and skipped; the good ones are
 * returned with their image paths, for the caller to decode.
 */
export function parseRecords(text: string): { records: { line: number; record: Json }[]; errors: RecordError[] } {
  const records: { line: number; record: Json }[] = [];
  const errors: RecordError[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const s = raw.trim();
    if (!s) return;
    try {
      const v = JSON.parse(s);
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
      records.push({ line: i + 1, record: v as Json });
    } catch (e) {
      errors.push(new RecordError(i + 1, `invalid JSON (${(e as Error).message})`));
    }
  });
  return { records, errors };
}
