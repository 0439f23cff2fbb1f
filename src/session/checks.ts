// The checks every training example passes before step 1 (session/examples.ts runs them all and
// reports every problem at once). Each is a small named function returning a problem sentence, or
// null when the thing is fine; the sentence says what is wrong, the caller adds which record.
import { MAX_IMAGE_PIXELS, smartResize } from '../data/image.ts';
import { boxProblem, scanGroundings, type Box } from '../data/bbox.ts';

/** An image transformers' smart_resize refuses (too small, aspect ratio over 200), or one too large to decode safely. */
export function imageSizeProblem(width: number, height: number, minPixels: number, maxPixels: number): string | null {
  // decodeImageFile refuses these from the header; this catches pixels decoded elsewhere (the browser)
  const limit = 2 * MAX_IMAGE_PIXELS;
  if (width * height > limit) return `the image is ${width}×${height} = ${width * height} pixels, above the ${limit}-pixel limit (PIL refuses it as a decompression bomb): downscale it`;
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
 * A grounding answer (Qwen2.5-VL bbox_2d JSON, in the resized frame `frame`) that does not parse into
 * boxes (data/bbox.ts scanGroundings names them), or holds a bad box (data/bbox.ts boxProblem).
 * Text without any bbox object is not a grounding answer: null.
 */
export function groundingAnswerProblem(text: string, frame: { width: number; height: number }): string | null {
  const { groundings, problems } = scanGroundings(text);
  if (problems.length) return `${problems[0]}: fix the JSON`;
  for (const g of groundings) {
    const p = boxProblem(g.bbox, frame.width, frame.height);
    if (p) return `${p} (the answer's boxes are in the ${frame.width}×${frame.height} resized frame)`;
  }
  return null;
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
