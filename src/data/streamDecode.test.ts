// Streaming decode with the real Qwen tokenizer: characters split over tokens never show as U+FFFD,
// every step's text is a prefix of the next, and the last equals the decode of all the ids.
import { describe, expect, it } from 'vitest';
import { loadDefaultTokenizer } from './tokenizer.ts';
import { IncrementalDecoder } from './streamDecode.ts';

describe('IncrementalDecoder', () => {
  it('multi-byte characters split over tokens: settled text only, growing, equal to the full decode', async () => {
    const tok = await loadDefaultTokenizer();
    const answer = 'Le château 中文字 🙂 𝔘𝔫𝔦 ǅ̈ ```json\n[{"bbox_2d": [12, 30, 200, 150], "label": "maison"}]\n```';
    const ids = tok.encode(answer);
    const decode = (x: number[]) => tok.decode(x, { skipSpecialTokens: true });
    // the test means something: some token alone is a partial character
    expect(ids.some((id) => decode([id]).includes('\uFFFD'))).toBe(true);
    expect(ids.map((id) => decode([id])).join('')).not.toBe(answer);
    const d = new IncrementalDecoder(decode);
    let prev = '';
    const steps: string[] = [];
    for (const id of [...ids, tok.special.imEnd]) {
      const t = d.push(id);
      expect(t).not.toContain('\uFFFD');
      expect(t.startsWith(prev), `${JSON.stringify(prev)} → ${JSON.stringify(t)}`).toBe(true);
      steps.push(t);
      prev = t;
    }
    expect(prev).toBe(answer); // the stop token (special) adds nothing
    expect(d.finish()).toBe(answer);
    expect(d.tokens).toBe(ids.length + 1);
    // some steps waited for the rest of a character
    expect(steps.filter((t, i) => i > 0 && t === steps[i - 1]).length).toBeGreaterThan(0);
  });

  it('a partial character left at the end shows once generation ends', async () => {
    const tok = await loadDefaultTokenizer();
    const ids = tok.encode('ab 𝔘𝔫');
    const d = new IncrementalDecoder((x) => tok.decode(x));
    const cut = ids.findIndex((_, i) => tok.decode(ids.slice(0, i + 1)).endsWith('\uFFFD'));
    expect(cut).toBeGreaterThan(-1);
    for (const id of ids.slice(0, cut + 1)) d.push(id);
    expect(d.text).toMatch(/^ab ?$/);
    expect(d.finish()).toMatch(/^ab ?\uFFFD+$/);
  });
});
