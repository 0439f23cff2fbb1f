import { beforeAll, describe, expect, it } from 'vitest';
import {
  buildPrompt, buildSample, expandImagePads, IGNORE_INDEX, QWEN2_5_VL_CHAT_TEMPLATE, renderBuiltin, renderChat, type ChatMessage,
} from './template.ts';
import { loadDefaultTokenizer, type QwenTokenizer } from './tokenizer.ts';

const img = { type: 'image' as const };
const txt = (text: string) => ({ type: 'text' as const, text });
const CONVERSATIONS: ChatMessage[][] = [
  [{ role: 'user', content: 'Hi' }],
  [{ role: 'user', content: [img, txt('Find the cat.')] }, { role: 'assistant', content: '{"bbox_2d": [1, 2, 3, 4], "label": "cat"}' }],
  [{ role: 'system', content: 'Be terse.' }, { role: 'user', content: [txt('A'), img, txt('B'), img] }, { role: 'assistant', content: 'two' }],
  [{ role: 'user', content: [img] }, { role: 'assistant', content: 'x' }, { role: 'user', content: 'and?' }, { role: 'assistant', content: [txt('y')] }],
  [{ role: 'system', content: [txt('sys')] }, { role: 'user', content: '' }],
];

describe('chat template text', () => {
  it('renders the documented Qwen2.5-VL format', () => {
    expect(renderBuiltin(CONVERSATIONS[1], { addGenerationPrompt: false })).toBe(
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n'
      + '<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Find the cat.<|im_end|>\n'
      + '<|im_start|>assistant\n{"bbox_2d": [1, 2, 3, 4], "label": "cat"}<|im_end|>\n',
    );
    expect(renderBuiltin(CONVERSATIONS[0], { addGenerationPrompt: true }).endsWith('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n')).toBe(true);
  });
  it('is identical to the jinja rendering of the Qwen2.5-VL chat_template', () => {
    for (const conv of CONVERSATIONS) for (const addGenerationPrompt of [false, true]) for (const addVisionId of [false, true]) {
      const opts = { addGenerationPrompt, addVisionId };
      expect(renderBuiltin(conv, opts)).toBe(renderChat(conv, { ...opts, chatTemplate: QWEN2_5_VL_CHAT_TEMPLATE }));
    }
    expect(renderBuiltin(CONVERSATIONS[2], { addVisionId: true })).toContain('APicture 1: <|vision_start|>');
  });
  it('refuses videos and broken templates', () => {
    expect(() => renderBuiltin([{ role: 'user', content: [{ type: 'video' } as never] }])).toThrow(/video/);
    expect(() => renderChat(CONVERSATIONS[0], { chatTemplate: '{% for %}' })).toThrow(/chat template: does not parse/);
  });
});

describe('buildSample / buildPrompt', () => {
  let tok: QwenTokenizer;
  beforeAll(async () => { tok = await loadDefaultTokenizer(); });

  it('expands image pads and labels only assistant content + <|im_end|>', () => {
    const s = buildSample({ messages: CONVERSATIONS[1], images: [{ gridThw: [1, 4, 6] }], tokenizer: tok });
    const { imStart, imEnd, visionStart, visionEnd, imagePad } = tok.special;
    const ids = [...s.inputIds];
    expect(ids.filter((t) => t === imagePad).length).toBe(6);
    const vs = ids.indexOf(visionStart);
    expect(ids.slice(vs, vs + 8)).toEqual([visionStart, ...Array(6).fill(imagePad), visionEnd]);
    expect(s.attentionMask.every((v) => v === 1)).toBe(true);
    expect(s.labels.length).toBe(ids.length);
    const answer = tok.encode('{"bbox_2d": [1, 2, 3, 4], "label": "cat"}');
    const trained = [...s.labels].filter((l) => l !== IGNORE_INDEX);
    expect(trained).toEqual([...answer, imEnd]);
    // the trained span sits right after "<|im_start|>assistant\n", and the final "\n" is masked
    const first = s.labels.findIndex((l) => l !== IGNORE_INDEX);
    expect(ids.slice(first - 3, first)).toEqual([imStart, tok.encode('assistant')[0], 198]);
    expect(ids[ids.length - 1]).toBe(198);
    expect(s.labels[ids.length - 1]).toBe(IGNORE_INDEX);
    expect(s.labels[ids.length - 2]).toBe(imEnd);
    // the ids are those of tokenizing the rendered text with the pads expanded in the text
    expect(ids).toEqual(tok.encode(s.text.replace('<|image_pad|>', '<|image_pad|>'.repeat(6))));
  });
  it('labels every assistant turn of a multi-turn conversation', () => {
    const s = buildSample({ messages: CONVERSATIONS[3], images: [{ gridThw: [1, 2, 2] }], tokenizer: tok });
    const trained = [...s.labels].filter((l) => l !== IGNORE_INDEX);
    expect(trained).toEqual([...tok.encode('x'), tok.special.imEnd, ...tok.encode('y'), tok.special.imEnd]);
  });
  it('gives the same sample through the jinja template and the built-in one', () => {
    const images = [{ gridThw: [1, 4, 4] }, { gridThw: [1, 2, 6] }];
    const a = buildSample({ messages: CONVERSATIONS[2], images, tokenizer: tok });
    const b = buildSample({ messages: CONVERSATIONS[2], images, tokenizer: tok, chatTemplate: QWEN2_5_VL_CHAT_TEMPLATE });
    expect(b).toEqual(a);
    expect([...a.inputIds].filter((t) => t === tok.special.imagePad).length).toBe(4 + 3);
  });
  it('keeps whole-text tokenization when an answer starts with a newline', () => {
    const s = buildSample({ messages: [{ role: 'user', content: 'q' }, { role: 'assistant', content: '\nanswer' }], tokenizer: tok });
    expect([...s.inputIds]).toEqual(tok.encode(s.text));
    const trained = [...s.labels].filter((l) => l !== IGNORE_INDEX);
    expect(tok.decode(trained)).toBe('\n\nanswer<|im_end|>'); // the "\n\n" token straddles prompt and answer
  });
  it('builds a generation prompt', () => {
    const p = buildPrompt({ messages: CONVERSATIONS[1].slice(0, 1), images: [{ gridThw: [1, 2, 2] }], tokenizer: tok });
    const ids = [...p.inputIds];
    expect(ids.slice(-3)).toEqual([tok.special.imStart, tok.encode('assistant')[0], 198]);
    expect(ids.filter((t) => t === tok.special.imagePad).length).toBe(1);
    expect(p.text.endsWith('<|im_start|>assistant\n')).toBe(true);
    expect('labels' in p).toBe(false);
  });
  it('fails clearly on mismatched images, missing answers and long samples', () => {
    expect(() => buildSample({ messages: CONVERSATIONS[1], images: [], tokenizer: tok })).toThrow(/hold 1 images but 0 image grids/);
    expect(() => buildSample({ messages: CONVERSATIONS[0], tokenizer: tok })).toThrow(/no assistant message/);
    expect(() => buildSample({ messages: CONVERSATIONS[1], images: [{ gridThw: [1, 40, 40] }], tokenizer: tok, maxLength: 300 }))
      .toThrow(/4\d\d tokens \(400 of them image tokens\) exceed the limit of 300/);
    expect(() => expandImagePads([5], undefined, [{ gridThw: [1, 3, 4] }], 5)).toThrow(/multiples of 2/);
  });
});
