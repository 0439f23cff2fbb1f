import { beforeAll, describe, expect, it } from 'vitest';
import { boxToResized, iou, parseGroundings } from './bbox.ts';
import { preprocessImage } from './image.ts';
import { SHAPE_COLORS, syntheticGrounding, syntheticPreferences, syntheticRlPrompts } from './synthetic.ts';
import { buildPrompt, buildSample, IGNORE_INDEX } from './template.ts';
import { loadDefaultTokenizer, type QwenTokenizer } from './tokenizer.ts';

const px = (img: { data: ArrayLike<number>; width: number }, x: number, y: number) => {
  const o = (y * img.width + x) * 3;
  return [img.data[o], img.data[o + 1], img.data[o + 2]];
};

describe('syntheticGrounding', () => {
  const set = syntheticGrounding({ count: 24, seed: 3 });
  it('is deterministic in the seed', () => {
    const again = syntheticGrounding({ count: 24, seed: 3 });
    expect(again.map((r) => r.answer)).toEqual(set.map((r) => r.answer));
    expect(Buffer.from(again[5].image.data).equals(Buffer.from(set[5].image.data))).toBe(true);
    const other = syntheticGrounding({ count: 24, seed: 4 });
    expect(other.map((r) => r.answer)).not.toEqual(set.map((r) => r.answer));
  });
  it('draws 1–3 distinct, disjoint shapes; each box is the tight box of its painted pixels', () => {
    const counts = new Set<number>();
    for (const r of set) {
      counts.add(r.shapes.length);
      expect(r.shapes.length).toBeGreaterThanOrEqual(1);
      expect(r.shapes.length).toBeLessThanOrEqual(3);
      expect(new Set(r.shapes.map((s) => s.label)).size).toBe(r.shapes.length);
      for (const [i, s] of r.shapes.entries()) {
        for (const [j, t] of r.shapes.entries()) if (i < j) expect(iou(s.box, t.box)).toBe(0);
        const [x1, y1, x2, y2] = s.box;
        const c = SHAPE_COLORS[s.color];
        const is = (x: number, y: number) => px(r.image, x, y).every((v, k) => v === c[k]);
        const rowHas = (y: number) => Array.from({ length: x2 - x1 }, (_, k) => is(x1 + k, y)).some(Boolean);
        const colHas = (x: number) => Array.from({ length: y2 - y1 }, (_, k) => is(x, y1 + k)).some(Boolean);
        expect([rowHas(y1), rowHas(y2 - 1), colHas(x1), colHas(x2 - 1)]).toEqual([true, true, true, true]);
      }
      expect(r.label).toBe(r.shapes[r.target].label);
      expect(r.question).toBe(`Where is the ${r.label}?`);
    }
    expect([...counts].sort()).toEqual([1, 2, 3]);
  });
  it('answers in the smart-resized frame (128×96 → 140×84)', () => {
    for (const r of set) {
      expect(r.resized).toEqual({ width: 140, height: 84 });
      expect(r.boxResized).toEqual(boxToResized(r.box, { width: 128, height: 96 }, r.resized));
      expect(parseGroundings(r.answer)).toEqual([{ bbox: r.boxResized, label: r.label }]);
      expect(r.answer).toBe(`{"bbox_2d": [${r.boxResized.join(', ')}], "label": "${r.label}"}`);
    }
    const q = syntheticGrounding({ count: 2, seed: 3, answerFormat: 'qwen' });
    expect(q[0].answer.startsWith('```json\n[')).toBe(true);
    expect(parseGroundings(q[0].answer)[0].bbox).toEqual(set[0].boxResized);
    const same = syntheticGrounding({ count: 1, width: 140, height: 112 });
    expect(same[0].boxResized).toEqual(same[0].box);
  });
  it('feeds preprocessImage and buildSample / buildPrompt', async () => {
    const tok: QwenTokenizer = await loadDefaultTokenizer();
    const r = set[0];
    const img = preprocessImage(r.image);
    expect([img.width, img.height]).toEqual([140, 84]);
    const s = buildSample({ messages: r.messages, images: [{ gridThw: img.imageGridThw }], tokenizer: tok });
    const trained = Array.from(s.inputIds).filter((_, i) => s.labels[i] !== IGNORE_INDEX);
    expect(tok.decode(trained)).toBe(`${r.answer}<|im_end|>`);
    expect(Array.from(s.inputIds).filter((t) => t === tok.special.imagePad).length).toBe(img.numTokens);
    const p = buildPrompt({ messages: r.prompt, images: [{ gridThw: img.imageGridThw }], tokenizer: tok });
    expect(p.text.endsWith(`${r.question}<|im_end|>\n<|im_start|>assistant\n`)).toBe(true);
  });
});

describe('syntheticPreferences / syntheticRlPrompts', () => {
  it('pairs the correct box with a wrong one', () => {
    const pairs = syntheticPreferences({ count: 32, seed: 9 });
    for (const p of pairs) {
      expect(p.chosen).toBe(p.answer);
      expect(parseGroundings(p.rejected)[0].bbox).toEqual(p.rejectedBox);
      expect(iou(p.rejectedBox, p.boxResized)).toBeLessThan(0.5);
      expect(p.rejectedMessages.at(-1)).toEqual({ role: 'assistant', content: p.rejected });
      expect(p.chosenMessages.slice(0, -1)).toEqual(p.rejectedMessages.slice(0, -1));
    }
    // the same images and questions as the SFT set with the same options
    expect(pairs.map((p) => p.question)).toEqual(syntheticGrounding({ count: 32, seed: 9 }).map((r) => r.question));
  });
  it('gives GRPO prompts with reference boxes in the answer frame', () => {
    const ps = syntheticRlPrompts({ count: 4, seed: 1 });
    for (const p of ps) {
      expect(p.reference.boxes).toEqual([p.boxResized]);
      expect(p.prompt).toHaveLength(1);
    }
  });
  it('refuses bad options', () => {
    expect(() => syntheticGrounding({ count: 1, colors: ['teal'] })).toThrow(/unknown colour "teal"/);
    expect(() => syntheticGrounding({ count: 1, minShapes: 3, maxShapes: 2 })).toThrow(/minShapes/);
  });
});
