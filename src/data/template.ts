// Chat template → token ids → image-pad expansion → labels.
//
// Text: the Qwen2.5-VL chat template (chat_template of Qwen/Qwen2.5-VL-*-Instruct), rendered with
// @huggingface/jinja when a model folder supplies a template, else by renderBuiltin, which produces
// the same text (checked against the jinja rendering in template.test.ts).
// Ids: the whole rendered text is tokenized at once, as transformers' processor does, then each
// image's single <|image_pad|> becomes t·(gh/m)·(gw/m) pads (same ids as expanding the text first,
// since <|image_pad|> is a special token that is split out before BPE).
// Labels (choice): −100 everywhere except each assistant turn's content tokens and its closing
// <|im_end|>; the "\n" after <|im_end|> is masked, as TRL's assistant-only loss (generation blocks) and
// ms-swift do; the model never has to predict it, since generation stops at <|im_end|>. The official
// qwen-vl-finetune script trains on that "\n" too; it makes no difference at inference.
// Assistant spans are found by rendering the conversation up to each assistant turn (with the
// generation prompt) and up to its end, so any prefix-stable template works, not just the built-in.

import { Template } from '@huggingface/jinja';
import type { QwenTokenizer } from './tokenizer.ts';

export type ContentPart =
  | { type: 'text'; text: string }
  | { type: 'image'; [k: string]: unknown };

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string | ContentPart[];
}

export const DEFAULT_SYSTEM_PROMPT = 'You are a helpful assistant.';
export const IGNORE_INDEX = -100;

/** chat_template of Qwen/Qwen2.5-VL-3B-Instruct (identical across the Qwen2.5-VL instruct models). */
export const QWEN2_5_VL_CHAT_TEMPLATE =
  "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

export interface RenderOptions {
  /** End with `<|im_start|>assistant\n` (a prompt for generation). */
  addGenerationPrompt?: boolean;
  /** A jinja chat template (e.g. tokenizer_config.json's); absent = the built-in Qwen2.5-VL one. */
  chatTemplate?: string;
  /** Prefix images with "Picture k: " (the template's add_vision_id). */
  addVisionId?: boolean;
}

/** The Qwen2.5-VL template written out in TypeScript (same text as the jinja template). */
export function renderBuiltin(messages: ChatMessage[], opts: Omit<RenderOptions, 'chatTemplate'> = {}): string {
  let out = '';
  let images = 0;
  messages.forEach((m, i) => {
    if (i === 0 && m.role !== 'system') out += `<|im_start|>system\n${DEFAULT_SYSTEM_PROMPT}<|im_end|>\n`;
    out += `<|im_start|>${m.role}\n`;
    if (typeof m.content === 'string') {
      out += m.content;
    } else {
      for (const part of m.content as Record<string, unknown>[]) {
        if (part.type === 'image' || 'image' in part || 'image_url' in part) {
          images++;
          if (opts.addVisionId) out += `Picture ${images}: `;
          out += '<|vision_start|><|image_pad|><|vision_end|>';
        } else if (part.type === 'video' || 'video' in part) {
          throw new Error(`chat template: message ${i} holds a video; videos are not supported`);
        } else if ('text' in part) {
          out += String(part.text);
        }
      }
    }
    out += '<|im_end|>\n';
  });
  if (opts.addGenerationPrompt) out += '<|im_start|>assistant\n';
  return out;
}

const compiled = new Map<string, Template>();

/** Render a conversation to text: jinja for a supplied template, else the built-in one. */
export function renderChat(messages: ChatMessage[], opts: RenderOptions = {}): string {
  if (!opts.chatTemplate) return renderBuiltin(messages, opts);
  let t = compiled.get(opts.chatTemplate);
  if (!t) {
    try {
      t = new Template(opts.chatTemplate);
    } catch (e) {
      throw new Error(`chat template: does not parse (${(e as Error).message})`);
    }
    compiled.set(opts.chatTemplate, t);
  }
  return t.render({
    messages,
    add_generation_prompt: opts.addGenerationPrompt ?? false,
    add_vision_id: opts.addVisionId ?? false,
    bos_token: '',
    eos_token: '<|im_end|>',
  });
}

/** Per image, its grid (t, gh, gw) in patches, e.g. preprocessImage(...).imageGridThw. */
export interface SampleImage { gridThw: ArrayLike<number> }

export interface BuildOptions {
  messages: ChatMessage[];
  /** One entry per image in the messages, in order of appearance. */
  images?: SampleImage[];
  tokenizer: QwenTokenizer;
  /** vision_config.spatial_merge_size (2 for Qwen2.5-VL). */
  mergeSize?: number;
  /** Jinja template; default: the tokenizer's chat_template if it has one, else the built-in. */
  chatTemplate?: string;
  addVisionId?: boolean;
  /** Refuse samples longer than this many tokens (after image expansion). */
  maxLength?: number;
}

export interface Sample {
  inputIds: Int32Array;
  /** Same length as inputIds, not shifted: the id where the token is trained, −100 elsewhere. */
  labels: Int32Array;
  attentionMask: Int32Array;
  /** The rendered text (one <|image_pad|> per image). */
  text: string;
}

function commonPrefix(a: number[], b: number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

function templateOf(o: BuildOptions): string | undefined {
  return o.chatTemplate ?? o.tokenizer.chatTemplate;
}

/** Replace each image's single pad id by its t·(gh/m)·(gw/m) pads; also maps labels (pads → −100). */
export function expandImagePads(ids: number[], labels: number[] | undefined, images: SampleImage[], imagePadId: number, mergeSize = 2): { ids: number[]; labels: number[] } {
  const found = ids.filter((t) => t === imagePadId).length;
  if (found !== images.length) throw new Error(`sample: the messages hold ${found} images but ${images.length} image grids were given`);
  const outIds: number[] = [], outLabels: number[] = [];
  let k = 0;
  ids.forEach((t, i) => {
    if (t !== imagePadId) {
      outIds.push(t);
      outLabels.push(labels ? labels[i] : IGNORE_INDEX);
      return;
    }
    const g = images[k++].gridThw;
    if (g.length !== 3 || g[1] % mergeSize || g[2] % mergeSize || !(g[0] >= 1)) {
      throw new Error(`sample: image ${k - 1} grid (${Array.from(g).join(', ')}) must be (t, gh, gw) with gh, gw multiples of ${mergeSize}`);
    }
    const n = g[0] * (g[1] / mergeSize) * (g[2] / mergeSize);
    for (let j = 0; j < n; j++) { outIds.push(t); outLabels.push(IGNORE_INDEX); }
  });
  return { ids: outIds, labels: outLabels };
}

function finish(ids: number[], labels: number[], text: string, o: BuildOptions): Sample {
  const ex = expandImagePads(ids, labels, o.images ?? [], o.tokenizer.special.imagePad, o.mergeSize ?? 2);
  if (o.maxLength !== undefined && ex.ids.length > o.maxLength) {
    const pads = ex.ids.length - ids.length + (o.images?.length ?? 0);
    throw new Error(`sample: ${ex.ids.length} tokens (${pads} of them image tokens) exceed the limit of ${o.maxLength}`);
  }
  return { inputIds: Int32Array.from(ex.ids), labels: Int32Array.from(ex.labels), attentionMask: new Int32Array(ex.ids.length).fill(1), text };
}

/** A training sample: ids of the whole conversation and labels on the assistant turns. */
export function buildSample(o: BuildOptions): Sample {
  const { messages, tokenizer } = o;
  if (!messages.some((m) => m.role === 'assistant')) throw new Error('sample: no assistant message, nothing to train on');
  const r = (msgs: ChatMessage[], gen: boolean) => renderChat(msgs, { chatTemplate: templateOf(o), addVisionId: o.addVisionId, addGenerationPrompt: gen });
  const text = r(messages, false);
  const ids = tokenizer.encode(text);
  const labels: number[] = new Array(ids.length).fill(IGNORE_INDEX);
  const imEnd = tokenizer.special.imEnd;
  messages.forEach((m, i) => {
    if (m.role !== 'assistant') return;
    const before = r(messages.slice(0, i), true), through = r(messages.slice(0, i + 1), false);
    if (!text.startsWith(before) || !text.startsWith(through)) {
      throw new Error(`sample: the chat template does not render message ${i} as a continuation of the ones before it`);
    }
    // Token boundaries: where the prompt's tokens stop matching (a token straddling the boundary, e.g.
    // "\n\n" when the answer starts with "\n", counts as answer) and where the turn's tokens end.
    const start = commonPrefix(tokenizer.encode(before), ids);
    const end = commonPrefix(tokenizer.encode(through), ids);
    let stop = end;
    for (let k = start; k < end; k++) if (ids[k] === imEnd) { stop = k + 1; break; }
    for (let k = start; k < stop; k++) labels[k] = ids[k];
  });
  return finish(ids, labels, text, o);
}

/** A generation prompt: the conversation so far, ending with `<|im_start|>assistant\n`. */
export function buildPrompt(o: BuildOptions): Omit<Sample, 'labels'> {
  const text = renderChat(o.messages, { chatTemplate: templateOf(o), addVisionId: o.addVisionId, addGenerationPrompt: true });
  const ids = o.tokenizer.encode(text);
  const { labels: _unused, ...rest } = finish(ids, ids.map(() => IGNORE_INDEX), text, o);
  return rest;
}
