// The checks every training example passes before step 1 (session/examples.ts runs them all and
// reports every problem at once). Each is a small named function returning a problem sentence, or
// null when the thing is fine; the sentence says what is wrong, the caller adds which record.
import { smartResize } from '../data/image.ts';
import { parseGroundings, type Box } from '../data/bbox.ts';

/** PIL's DecompressionBombError threshold (2 × Image.MAX_IMAGE_PIXELS): above it no Python tool opens the file either. */
export const MAX_IMAGE_PIXELS = 2 * 89_478_485;

/** An image transformers' smart_resize refuses (too small, aspect ratio over 200), or one too large to decode safely. */
export function imageSizeProblem(width: number, height: number, minPixels: number, maxPixels: number): string | null {
  if (width * height > MAX_IMAGE_PIXELS) return `the image is ${width}×${height} = ${width * height} pixels, above the ${MAX_IMAGE_PIXELS}-pixel limit (PIL refuses it as a decompression bomb): downscale it`;
  try {
    smartResize(height, width, 28, minPixels, maxPixels);
    return null;
  } catch (e) {
    return `${(e as Error).message.replace(/^smart_resize: /, '')} (smart_resize refuses it): replace or resize the image`;
  }
}

/** The frame a grounding answer is written in: the smart-resized image. */
export function resizedSize(width: number, height: number, minPixels: number, maxPixels: number): { width: number; height: number } {
  const [h, w] = smartResize(height, width, 28, minPixels, maxPixels);
  return { width: w, height: h };
}

/**
 * A box that is not 4 finite numbers with x1 < x2, y1 < y2 inside a width × height frame.
 * (data/bbox.ts boxProblem is the data engineer's version of this; swap at merge.)
 */
export function boxProblem(box: readonly unknown[], width: number, height: number): string | null {
  if (box.length !== 4 || !box.every((v) => typeof v === 'number' && Number.isFinite(v))) return `box ${JSON.stringify(box)} is not 4 finite numbers [x1, y1, x2, y2]`;
  const [x1, y1, x2, y2] = box as number[];
  if (!(x1 < x2 && y1 < y2)) return `box [${box.join(', ')}] needs x1 < x2 and y1 < y2`;
  if (x1 < 0 || y1 < 0 || x2 > width || y2 > height) return `box [${box.join(', ')}] reaches outside the ${width}×${height} image`;
  return null;
}

/** How many `bbox_2d` / `bbox` keys a text holds (to tell a malformed box from plain text). */
function boxKeys(text: string): number {
  return (text.match(/["']bbox(_2d)?["']\s*:/g) ?? []).length;
}

/**
 * A grounding answer (Qwen2.5-VL bbox_2d JSON, in the resized frame `frame`) that does not parse into
 * boxes, or holds a bad box. Text without any bbox key is not a grounding answer: null.
 */
export function groundingAnswerProblem(text: string, frame: { width: number; height: number }): string | null {
  const keys = boxKeys(text);
  if (!keys) return null;
  const raw = rawBoxes(text);
  const got = parseGroundings(text);
  if (got.length < keys || raw.length < keys) {
    const bad = raw.map((b) => boxProblem(b, frame.width, frame.height)).find(Boolean);
    return bad ?? `the answer has ${keys} bbox_2d entr${keys > 1 ? 'ies' : 'y'} but only ${got.length} parse as [x1, y1, x2, y2]: fix the JSON`;
  }
  for (const b of raw) {
    const p = boxProblem(b, frame.width, frame.height);
    if (p) return `${p} (the answer's boxes are in the ${frame.width}×${frame.height} resized frame)`;
  }
  return null;
}

/** The bbox_2d arrays of a text as written (whatever they hold), for boxProblem. */
function rawBoxes(text: string): unknown[][] {
  const out: unknown[][] = [];
  const re = /["']bbox(?:_2d)?["']\s*:\s*(\[[^\]]*\])/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    try {
      const v = JSON.parse(m[1]) as unknown;
      out.push(Array.isArray(v) ? v : [v]);
    } catch {
      out.push([m[1]]);
    }
  }
  return out;
}

/** Reference boxes of an IoU-rewarded prompt (resized frame). */
export function referenceBoxesProblem(boxes: Box[] | undefined, frame: { width: number; height: number }): string | null {
  if (!boxes?.length) return 'the IoU reward needs reference boxes, and the record has none';
  for (const b of boxes) {
    const p = boxProblem(b, frame.width, frame.height);
    if (p) return `reference ${p}`;
  }
  return null;
}

/** DPO learns nothing from a pair whose answers are the same. */
export function preferenceProblem(chosen: string, rejected: string): string | null {
  if (!chosen.trim() || !rejected.trim()) return 'a preference pair needs a chosen and a rejected answer, both non-empty';
  if (chosen.trim() === rejected.trim()) return 'the chosen and rejected answers are the same, so DPO has nothing to learn from the pair: change one';
  return null;
}

/** A sequence longer than max length (tokens, image tokens included). */
export function lengthProblem(tokens: number, imageTokens: number, maxLength: number, what = 'the example'): string | null {
  if (tokens <= maxLength) return null;
  return `${what} is ${tokens} tokens (${imageTokens} of them image tokens), above max length ${maxLength}: shorten the text, lower max pixels, or raise data.maxLength`;
}
