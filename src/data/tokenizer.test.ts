import { describe, expect, it } from 'vitest';
import { loadDefaultTokenizer, QwenTokenizer } from './tokenizer.ts';

describe('default Qwen tokenizer', () => {
  it('has Qwen2.5 special ids', async () => {
    const tok = await loadDefaultTokenizer();
    expect(tok.special).toEqual({
      endOfText: 151643, imStart: 151644, imEnd: 151645, visionStart: 151652, visionEnd: 151653, imagePad: 151655, videoPad: 151656,
    });
    expect(tok.vocabSize).toBeGreaterThanOrEqual(151665);
    expect(tok.vocabSize).toBeLessThanOrEqual(151936); // fits the model's embedding rows
    expect(await loadDefaultTokenizer()).toBe(tok);
  });
  it('encodes like the Rust tokenizer (byte-level BPE, specials split out)', async () => {
    const tok = await loadDefaultTokenizer();
    // Reference ids of Qwen2.5's tokenizer.json
    expect(tok.encode('Hello world')).toEqual([9707, 1879]);
    expect(tok.encode('<|im_start|>user\nHi<|im_end|>\n')).toEqual([151644, 872, 198, 13048, 151645, 198]);
    expect(tok.encode('<|vision_start|><|image_pad|><|vision_end|>')).toEqual([151652, 151655, 151653]);
    expect(tok.encode('assistant\n')).toEqual([77091, 198]);
    expect(tok.encode('')).toEqual([]);
  });
  it('round-trips text, unicode and specials', async () => {
    const tok = await loadDefaultTokenizer();
    for (const s of ['Hello, world!  Two spaces.', '中文和 émoji 🚀\n\n\tindent', '{"bbox_2d": [1, 22, 333, 4444], "label": "cat"}', '<|im_start|>system\nx<|im_end|>']) {
      expect(tok.decode(tok.encode(s))).toBe(s);
    }
    expect(tok.decode([151644, 872, 198, 13048, 151645], { skipSpecialTokens: true })).toBe('user\nHi');
    expect(tok.decode([])).toBe('');
    expect(tok.idToToken(151655)).toBe('<|image_pad|>');
    expect(tok.tokenToId('<|im_end|>')).toBe(151645);
    expect(() => tok.requireId('<|nope|>')).toThrow(/<\|nope\|>/);
  });
});

describe('QwenTokenizer.fromJSON', () => {
  it('builds from a tokenizer.json string and keeps the chat template of the config', () => {
    const vocab: Record<string, number> = { a: 0, b: 1, ab: 2 };
    const specials = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|vision_start|>', '<|vision_end|>', '<|image_pad|>', '<|video_pad|>'];
    const json = {
      version: '1.0', truncation: null, padding: null,
      added_tokens: specials.map((content, i) => ({ id: 3 + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
      normalizer: null,
      pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true },
      post_processor: null,
      decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true },
      model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: ['a b'] },
    };
    const tok = QwenTokenizer.fromJSON(JSON.stringify(json), { chat_template: '{{ x }}' });
    expect(tok.special.imagePad).toBe(8);
    expect(tok.vocabSize).toBe(10);
    expect(tok.chatTemplate).toBe('{{ x }}');
    expect(tok.encode('ab<|im_end|>a')).toEqual([2, 5, 0]);
  });
  it('refuses what is not a Qwen tokenizer', () => {
    expect(() => QwenTokenizer.fromJSON('{oops')).toThrow(/tokenizer.json: not valid JSON/);
    expect(() => QwenTokenizer.fromJSON({})).toThrow(/no "model"/);
    const json = {
      added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null,
      model: { type: 'BPE', vocab: { a: 0 }, merges: [] },
    };
    expect(() => QwenTokenizer.fromJSON(json)).toThrow(/missing <\|endoftext\|>/);
  });
});
