// A deterministic synthetic grounding set: coloured shapes (rectangle, circle, triangle) on a plain
// background; the question names one shape, the answer is its box. Used by the training tests (SFT, DPO,
// GRPO, PPO on the tiny model) and as a demo dataset. Same seed + options ⇒ byte-identical records.
//
// Frames: `box` is in ORIGINAL image pixels (edges: a shape covering columns 10..19 has x1 = 10,
// x2 = 20); `boxResized` is the same box in the smart-resized frame the model sees (boxToResized), and
// the answer text uses it, as Qwen2.5-VL answers grounding questions in absolute resized pixels.
// The default size 128×96 is not a multiple of 28 on purpose (it resizes to 140×84), so a frame mix-up
// shows up as wrong boxes instead of hiding behind an identity resize.
//
// Answer text (choice): by default one object without a code fence,
//   {"bbox_2d": [x1, y1, x2, y2], "label": "red circle"}
// (fewer tokens for a tiny model to learn); answerFormat 'qwen' gives what Qwen2.5-VL itself writes
// (formatGroundings: a ```json fence around a one-element list). Both parse with parseGroundings.
//
// Records carry chat messages with an image placeholder ({type: 'image'}) and the RawImage, so a training
// loop builds samples with preprocessImage(record.image) and buildSample({messages, images: [{gridThw}]})
// (or buildPrompt({messages: record.prompt, ...}) for generation).

import { boxToResized, formatGroundings, iou, type Box, type Size } from './bbox.ts';
import { DEFAULT_IMAGE_CONFIG, smartResize, type ImageProcessorConfig, type RawImage } from './image.ts';
import type { ChatMessage } from './template.ts';
import { Rng } from '../base/rng.ts';

export type ShapeKind = 'rectangle' | 'circle' | 'triangle';

export const SHAPE_COLORS: Record<string, [number, number, number]> = {
  red: [220, 40, 40],
  green: [40, 170, 60],
  blue: [40, 80, 220],
  yellow: [240, 205, 40],
  purple: [150, 60, 190],
  orange: [245, 140, 30],
};

// Plain backgrounds, all far from every shape colour.
const BACKGROUNDS: [number, number, number][] = [[235, 235, 235], [190, 190, 190], [70, 70, 70], [235, 225, 205], [30, 30, 40]];

export interface SyntheticOptions {
  /** number of records */
  count: number;
  seed?: number;
  /** image size in pixels; default 128×96 */
  width?: number;
  height?: number;
  /** shapes per image, default 1..3 */
  minShapes?: number;
  maxShapes?: number;
  /** colour names from SHAPE_COLORS; default red, green, blue, yellow */
  colors?: string[];
  kinds?: ShapeKind[];
  /** question templates, `{label}` replaced by e.g. "red circle"; one picked per record */
  questions?: string[];
  /** 'object' (default), 'box' (the box alone, ms-swift's grounding form) or 'qwen' (```json fenced list, as Qwen2.5-VL answers) */
  answerFormat?: 'object' | 'box' | 'qwen';
  /** smart_resize settings of the model's image processor (the frame of the answers) */
  imageConfig?: Pick<ImageProcessorConfig, 'patchSize' | 'mergeSize' | 'minPixels' | 'maxPixels'>;
}

export interface SyntheticShape {
  kind: ShapeKind;
  color: string;
  /** "red circle" */
  label: string;
  /** tight box of the painted pixels, original pixels */
  box: Box;
}

export interface SyntheticGrounding {
  id: string;
  /** RGB bytes, width × height */
  image: RawImage;
  shapes: SyntheticShape[];
  /** index of the asked shape in `shapes` */
  target: number;
  label: string;
  question: string;
  /** asked shape's box, original pixels */
  box: Box;
  /** smart-resized size (the answer frame) */
  resized: Size;
  /** asked shape's box in the resized frame (integers) */
  boxResized: Box;
  /** the assistant's answer text (resized frame) */
  answer: string;
  /** [user: image + question] (for buildPrompt) */
  prompt: ChatMessage[];
  /** prompt + the assistant answer (for buildSample) */
  messages: ChatMessage[];
}

/** DPO pair: chosen = the correct box, rejected = a wrong one (another shape's box, or a displaced box). */
export interface SyntheticPreference extends SyntheticGrounding {
  chosen: string;
  rejected: string;
  /** the rejected box, resized frame */
  rejectedBox: Box;
  chosenMessages: ChatMessage[];
  rejectedMessages: ChatMessage[];
}

/** GRPO / PPO prompt: the reference for the reward functions (same shape as train/rewards' RewardReference). */
export interface SyntheticPrompt extends SyntheticGrounding {
  reference: { boxes: Box[]; answer: string };
}

// A shape as a pixel-centre membership test inside its placement rectangle [x, y, w, h].
function inside(kind: ShapeKind, x: number, y: number, w: number, h: number, px: number, py: number): boolean {
  if (kind === 'rectangle') return true;
  const u = (px - x) / w, v = (py - y) / h; // 0..1 within the rectangle
  if (kind === 'circle') return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25;
  // triangle, apex at the top centre: inside when |u − 0.5| ≤ v/2
  return Math.abs(u - 0.5) <= v / 2;
}

/** Paint one shape; returns the tight box of the painted pixels. */
function paint(rgb: Uint8Array, W: number, kind: ShapeKind, color: [number, number, number], x: number, y: number, w: number, h: number): Box {
  let x1 = Infinity, y1 = Infinity, x2 = -Infinity, y2 = -Infinity;
  for (let py = y; py < y + h; py++) {
    for (let px = x; px < x + w; px++) {
      if (!inside(kind, x, y, w, h, px + 0.5, py + 0.5)) continue;
      rgb.set(color, (py * W + px) * 3);
      x1 = Math.min(x1, px); y1 = Math.min(y1, py); x2 = Math.max(x2, px + 1); y2 = Math.max(y2, py + 1);
    }
  }
  return [x1, y1, x2, y2];
}

function answerText(box: Box, label: string, format: 'object' | 'box' | 'qwen'): string {
  if (format === 'qwen') return formatGroundings([{ bbox: box, label }]);
  if (format === 'box') return `{"bbox_2d": [${box.join(', ')}]}`;
  return `{"bbox_2d": [${box.join(', ')}], "label": ${JSON.stringify(label)}}`;
}

function userTurn(question: string): ChatMessage[] {
  return [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: question }] }];
}

function generate(opts: SyntheticOptions, rng: Rng, i: number): SyntheticGrounding {
  const W = opts.width ?? 128, H = opts.height ?? 96;
  const colors = opts.colors ?? ['red', 'green', 'blue', 'yellow'];
  const kinds = opts.kinds ?? ['rectangle', 'circle', 'triangle'];
  for (const c of colors) if (!SHAPE_COLORS[c]) throw new Error(`synthetic: unknown colour "${c}" (known: ${Object.keys(SHAPE_COLORS).join(', ')})`);
  const minS = opts.minShapes ?? 1, maxS = Math.min(opts.maxShapes ?? 3, colors.length * kinds.length);
  if (!(minS >= 1 && minS <= maxS)) throw new Error(`synthetic: need 1 <= minShapes <= maxShapes, got ${minS}..${maxS}`);
  const side = Math.min(W, H);
  if (side < 24) throw new Error(`synthetic: image ${W}x${H} is too small (both sides must be at least 24 pixels)`);

  const bg = rng.pick(BACKGROUNDS);
  const rgb = new Uint8Array(W * H * 3);
  for (let p = 0; p < W * H; p++) rgb.set(bg, p * 3);

  // Distinct (colour, kind) pairs so the question is unambiguous; rectangles placed without overlap.
  const want = rng.int(minS, maxS);
  const combos: [string, ShapeKind][] = [];
  for (const c of colors) for (const k of kinds) combos.push([c, k]);
  const shapes: SyntheticShape[] = [];
  const placed: [number, number, number, number][] = [];
  for (let attempt = 0; shapes.length < want && attempt < 200; attempt++) {
    const [color, kind] = combos[rng.int(0, combos.length - 1)];
    const w = rng.int(Math.round(side * 0.18), Math.round(side * 0.4));
    const h = kind === 'circle' ? w : rng.int(Math.round(side * 0.18), Math.round(side * 0.4));
    const x = rng.int(0, W - w), y = rng.int(0, H - h);
    const gap = 2;
    if (placed.some(([a, b, c, d]) => x < a + c + gap && a < x + w + gap && y < b + d + gap && b < y + h + gap)) continue;
    combos.splice(combos.findIndex(([c, k]) => c === color && k === kind), 1);
    placed.push([x, y, w, h]);
    const box = paint(rgb, W, kind, SHAPE_COLORS[color], x, y, w, h);
    shapes.push({ kind, color, label: `${color} ${kind}`, box });
  }

  const target = rng.int(0, shapes.length - 1);
  const s = shapes[target];
  const cfg = opts.imageConfig ?? DEFAULT_IMAGE_CONFIG;
  const [rh, rw] = smartResize(H, W, cfg.patchSize * cfg.mergeSize, cfg.minPixels, cfg.maxPixels);
  const resized = { width: rw, height: rh };
  const boxResized = boxToResized(s.box, { width: W, height: H }, resized);
  const question = rng.pick(opts.questions ?? ['Where is the {label}?']).replaceAll('{label}', s.label);
  const answer = answerText(boxResized, s.label, opts.answerFormat ?? 'object');
  const prompt = userTurn(question);
  return {
    id: `synthetic-${opts.seed ?? 0}-${i}`,
    image: { data: rgb, width: W, height: H, channels: 3 },
    shapes, target, label: s.label, question, box: s.box, resized, boxResized, answer, prompt,
    messages: [...prompt, { role: 'assistant', content: answer }],
  };
}

/** `count` grounding records (SFT). */
export function syntheticGrounding(opts: SyntheticOptions): SyntheticGrounding[] {
  const rng = new Rng(opts.seed ?? 0);
  return Array.from({ length: opts.count }, (_, i) => generate(opts, rng, i));
}

/** A wrong box (original pixels) for a record: another shape's box when there is one, else a displaced copy. */
function wrongBox(r: SyntheticGrounding, rng: Rng): Box {
  const others = r.shapes.filter((_, j) => j !== r.target);
  if (others.length > 0 && rng.next() < 0.5) return rng.pick(others).box;
  const W = r.image.width, H = r.image.height;
  const [x1, y1, x2, y2] = r.box;
  const w = x2 - x1, h = y2 - y1;
  for (let k = 0; k < 100; k++) {
    const x = rng.int(0, W - w), y = rng.int(0, H - h);
    const b: Box = [x, y, x + w, y + h];
    if (iou(b, r.box) < 0.3) return b;
  }
  // Shape too large to displace: a small box in the corner farthest from it.
  const cx = (x1 + x2) / 2 < W / 2 ? W - 8 : 0, cy = (y1 + y2) / 2 < H / 2 ? H - 8 : 0;
  return [cx, cy, cx + 8, cy + 8];
}

/** `count` DPO pairs (same images and questions as syntheticGrounding with the same options). */
export function syntheticPreferences(opts: SyntheticOptions): SyntheticPreference[] {
  const neg = new Rng(((opts.seed ?? 0) ^ 0x5bd1e995) >>> 0);
  return syntheticGrounding(opts).map((r) => {
    const rejectedBox = boxToResized(wrongBox(r, neg), { width: r.image.width, height: r.image.height }, r.resized);
    const rejected = answerText(rejectedBox, r.label, opts.answerFormat ?? 'object');
    return {
      ...r, chosen: r.answer, rejected, rejectedBox,
      chosenMessages: r.messages,
      rejectedMessages: [...r.prompt, { role: 'assistant', content: rejected }],
    };
  });
}

/** `count` GRPO / PPO prompts with their reference box (resized frame) and answer. */
export function syntheticRlPrompts(opts: SyntheticOptions): SyntheticPrompt[] {
  return syntheticGrounding(opts).map((r) => ({ ...r, reference: { boxes: [r.boxResized], answer: r.answer } }));
}
