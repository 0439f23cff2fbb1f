// Records → training examples, every one checked before step 1 (for the studio and the CLI alike):
// the images decode and smart_resize accepts their size; a grounding answer parses into good boxes
// inside the image; the template renders and the sequence fits max length; a DPO pair differs.
// Every problem is collected, each naming its record (file + line, or image name) and what to do;
// then the caller's choice applies: refuse (default: ExampleProblems lists them all) or skip
// exactly those records (skipInvalid) and train on the rest.
import type { RawImage } from '../data/image.ts';
import { buildPrompt, buildSample, IGNORE_INDEX, type ChatMessage } from '../data/template.ts';
import type { QwenTokenizer } from '../data/tokenizer.ts';
import type { Box } from '../data/bbox.ts';
import { KIND_NAMES, methodKind, methodTakes, type TaskRecord } from '../data/formats/records.ts';
import type { Method, TrainConfig } from '../config/config.ts';
import type { TrainExample } from '../train/trainer.ts';
import { completionIds } from '../train/dpo.ts';
import { groundingAnswerProblem, imageSizeProblem, lengthProblem, preferenceProblem, referenceBoxesProblem, resizedSize } from './checks.ts';

/** One image of a record: decoded by the front end (its own decoder), or the reason it could not be. */
export interface SourceImage {
  name: string;
  image?: RawImage;
  error?: string;
}

/** One training record and where it came from ("data.jsonl line 3", 'image "cat.png"'). */
export interface ExampleSource {
  where: string;
  record: TaskRecord;
  images: SourceImage[];
}

export interface ExampleProblem {
  where: string;
  message: string;
}

/** Sizes for the memory estimate: the largest resized image and the longest text. */
export interface Plan {
  images: { height: number; width: number }[];
  textTokens: number;
}
export const DEFAULT_PLAN: Plan = { images: [{ height: 448, width: 448 }], textTokens: 256 };

/** Thrown when records have problems and the user did not choose to skip them. */
export class ExampleProblems extends Error {
  constructor(readonly problems: ExampleProblem[], readonly total: number, skipHint = 'skip them') {
    super(
      `${problems.length} of ${total} training record${total === 1 ? '' : 's'} cannot be trained on; fix them, or ${skipHint} to train on the rest:\n` +
        problems.map((p) => `  ${p.where}: ${p.message}`).join('\n'),
    );
    this.name = 'ExampleProblems';
  }
}

/** Whether `method` trains on this record (data/formats/records.ts methodTakes, shared with the Train panel). */
export function takesRecord(r: TaskRecord, method: Method): boolean {
  return methodTakes(r.kind, method);
}

const userTurn = (text: string, images: number): ChatMessage => ({
  role: 'user',
  content: [...Array.from({ length: images }, () => ({ type: 'image' as const })), { type: 'text' as const, text }],
});

/** A record with its decoded images → the Trainer's example (undefined when the method takes another kind). */
export function exampleOf(r: TaskRecord, images: RawImage[], method: Method): TrainExample | undefined {
  if (!takesRecord(r, method)) return undefined;
  if (r.kind === 'sft') return { kind: 'sft', images, messages: [userTurn(r.question, images.length), { role: 'assistant', content: r.answer }] };
  if (r.kind === 'preference') return { kind: 'dpo', images, prompt: [userTurn(r.prompt, images.length)], chosen: r.chosen, rejected: r.rejected };
  const boxes = referenceBoxes(r);
  return { kind: 'rl', images, prompt: [userTurn(r.prompt, images.length)], reference: { ...(boxes?.length ? { boxes } : {}), ...(r.reward === 'exact' ? { answer: r.reference } : {}) } };
}

function referenceBoxes(r: TaskRecord & { kind: 'rl' }): Box[] | undefined {
  return r.boxes?.map((b): Box => [b.x1, b.y1, b.x2, b.y2]);
}

/** Tokens GRPO / PPO sample after each prompt (a prompt plus them must fit max length); none for SFT / DPO. */
export function sampledTokens(c: Pick<TrainConfig, 'method' | 'grpo' | 'ppo'>): number | undefined {
  return c.method === 'grpo' ? c.grpo.maxNewTokens : c.method === 'ppo' ? c.ppo.maxNewTokens : undefined;
}

/** How messages name record k of n about a stored dataset's image. */
export function recordWhere(image: string, k: number, n: number): string {
  return `image "${image}"${n > 1 ? ` (question ${k + 1})` : ''}`;
}

export interface PrepareOptions {
  method: Method;
  /** smart_resize bounds (the frame of the records' box answers) and max length */
  data: TrainConfig['data'];
  /** GRPO / PPO: tokens sampled after the prompt (must fit max length too) */
  maxNewTokens?: number;
  tokenizer: QwenTokenizer;
  /** train on the good records, leaving out (and naming) the bad ones; default: refuse */
  skipInvalid?: boolean;
  /** how the front end spells "skip them" in the refusal (e.g. "pass --skip-invalid") */
  skipHint?: string;
  /** the dataset's name, for messages */
  name?: string;
  onProgress?: (done: number, total: number) => void;
}

export interface PreparedExamples {
  examples: TrainExample[];
  /** where each example came from (same order) */
  where: string[];
  /** the problems found (skipped when skipInvalid, else thrown) */
  problems: ExampleProblem[];
  /** records of another kind than the method takes */
  otherKind: number;
  plan: Plan;
}

/** The problems of one record (empty when it can be trained), and its token count. */
export function checkRecord(s: ExampleSource, o: PrepareOptions): { problems: string[]; example?: TrainExample; tokens: number; imageTokens: number; sizes: { height: number; width: number }[] } {
  const { minPixels, maxPixels, maxLength } = o.data;
  const problems: string[] = [];
  const sizes: { height: number; width: number }[] = [];
  for (const im of s.images) {
    const label = s.images.length > 1 ? `image ${im.name}: ` : '';
    if (!im.image) problems.push(`${label}cannot read the image${im.name ? ` ${im.name}` : ''} (${im.error ?? 'no pixels'}): replace or remove the file`);
    else {
      const p = imageSizeProblem(im.image.width, im.image.height, minPixels, maxPixels);
      if (p) problems.push(label + p);
      else sizes.push(resizedSize(im.image.width, im.image.height, minPixels, maxPixels));
    }
  }
  if (problems.length) return { problems, tokens: 0, imageTokens: 0, sizes };
  const frame = sizes[0] ?? { width: Infinity, height: Infinity };
  const r = s.record;
  if (r.kind === 'sft') {
    const p = groundingAnswerProblem(r.answer, frame);
    if (p) problems.push(p);
    if (!r.answer.trim()) problems.push('the answer is empty: write one, or remove the record');
  } else if (r.kind === 'preference') {
    const p = preferenceProblem(r.chosen, r.rejected) ?? groundingAnswerProblem(r.chosen, frame) ?? groundingAnswerProblem(r.rejected, frame);
    if (p) problems.push(p);
  } else if (r.reward === 'iou') {
    const p = referenceBoxesProblem(referenceBoxes(r), frame);
    if (p) problems.push(p);
  } else if (r.reward === 'exact' && !r.reference.trim()) problems.push('the exact-match reward needs a reference answer, and the record has none');
  if (problems.length) return { problems, tokens: 0, imageTokens: 0, sizes };

  const ex = exampleOf(r, s.images.map((i) => i.image!), o.method)!;
  const grids = sizes.map((z) => ({ gridThw: [1, z.height / 14, z.width / 14] }));
  const imageTokens = sizes.reduce((a, z) => a + (z.height / 28) * (z.width / 28), 0);
  const common = { images: grids, tokenizer: o.tokenizer };
  let tokens = 0;
  try {
    if (ex.kind === 'sft') {
      const smp = buildSample({ messages: ex.messages, ...common });
      tokens = smp.inputIds.length;
      if (smp.labels.findIndex((l) => l !== IGNORE_INDEX) < 1) problems.push('the answer gives no tokens to train on: write an answer after the question');
    } else {
      const prompt = buildPrompt({ messages: ex.prompt, ...common }).inputIds.length;
      if (ex.kind === 'dpo') tokens = prompt + Math.max(completionIds(o.tokenizer, ex.chosen).length, completionIds(o.tokenizer, ex.rejected).length);
      else tokens = prompt + (o.maxNewTokens ?? 0) + 1;
    }
  } catch (e) {
    problems.push(`the chat template cannot render it (${(e as Error).message.replace(/^sample: /, '')})`);
  }
  const what = ex.kind === 'rl' ? `the prompt with ${o.maxNewTokens ?? 0} new tokens` : ex.kind === 'dpo' ? 'the prompt with its longer answer' : 'the example';
  const len = problems.length ? null : lengthProblem(tokens, imageTokens, maxLength, what);
  if (len) problems.push(len);
  return { problems, example: problems.length ? undefined : ex, tokens, imageTokens, sizes };
}

/**
 * Check every record and build the examples of `o.method`. Records of another kind are counted,
 * not checked. Throws ExampleProblems naming every bad record unless `skipInvalid`, and a plain
 * Error when nothing is left to train on.
 */
export function prepareExamples(sources: ExampleSource[], o: PrepareOptions): PreparedExamples {
  const examples: TrainExample[] = [], where: string[] = [], problems: ExampleProblem[] = [];
  const kinds = new Map<TaskRecord['kind'], number>();
  let otherKind = 0, textTokens = 0, biggest = { height: 0, width: 0 };
  sources.forEach((s, i) => {
    o.onProgress?.(i, sources.length);
    kinds.set(s.record.kind, (kinds.get(s.record.kind) ?? 0) + 1);
    if (!takesRecord(s.record, o.method)) return void otherKind++;
    const c = checkRecord(s, o);
    for (const m of c.problems) problems.push({ where: s.where, message: m });
    if (!c.example) return;
    examples.push(c.example);
    where.push(s.where);
    textTokens = Math.max(textTokens, c.tokens - c.imageTokens);
    for (const z of c.sizes) if (z.height * z.width > biggest.height * biggest.width) biggest = z;
  });
  o.onProgress?.(sources.length, sources.length);
  const wanted = sources.length - otherKind;
  if (problems.length && !o.skipInvalid) throw new ExampleProblems(problems, wanted, o.skipHint);
  if (!examples.length) {
    const name = o.name ?? 'the dataset';
    const have = [...kinds].map(([k, n]) => `${n} ${KIND_NAMES[k]} record${n > 1 ? 's' : ''}`).join(', ');
    const want = KIND_NAMES[methodKind(o.method)];
    if (problems.length) throw new ExampleProblems(problems, wanted, o.skipHint);
    throw new Error(have
      ? `${name} has ${have}, but ${o.method.toUpperCase()} trains on ${want} records: pick the matching method or dataset kind.`
      : `${name} has no labelled examples yet: draw a box and ask a question (or write an answer) on at least one image.`);
  }
  const plan: Plan = biggest.height ? { images: [biggest], textTokens } : { images: [], textTokens: Math.max(textTokens, 1) };
  return { examples, where, problems, otherKind, plan };
}
