// Evaluation over the held-out split (session/split.ts), for both front ends: no gradients, the
// adapter on, every example once, in order. Metric names as trl logs them, with its `eval_` prefix:
// - SFT: eval_loss (masked token NLL, train/sft.ts sftLoss; the mean over examples, as transformers'
//   evaluation loop averages per-batch losses with an eval batch of one), eval_mean_token_accuracy.
// - DPO: eval_loss and eval_rewards/chosen|rejected|accuracies|margins, eval_logps/chosen|rejected
//   (train/dpo.ts dpoLoss over all pairs; the reference is the adapter switched off, as in training).
// - GRPO / PPO: eval_reward (the configured rewards' weighted total, train/rewards.ts) and
//   eval_rewards/<name>/mean, over one greedy completion per prompt.
// - Grounding (an SFT answer or an RL reference with boxes): a greedy decode parsed by
//   data/bbox.ts parseGroundings; per question parse success (≥ 1 box parsed) and IoU (rewards.ts
//   iouReward: boxes matched one to one, summed IoU over the larger count); over the split
//   eval_grounding/parse_rate, eval_grounding/mean_iou, eval_grounding/acc_iou50 and acc_iou75
//   (the share of questions with IoU ≥ 0.5 / ≥ 0.75). Boxes are compared in the resized frame the
//   answers are written in, as the IoU reward does.
import type { Qwen2_5_VL, SeqInput, ImageInput } from '../model/qwen2_5_vl.ts';
import type { QwenTokenizer } from '../data/tokenizer.ts';
import { DEFAULT_IMAGE_CONFIG, preprocessImage, stackImages, type RawImage } from '../data/image.ts';
import { buildPrompt, buildSample, IGNORE_INDEX, type ChatMessage } from '../data/template.ts';
import { parseGroundings, type Box } from '../data/bbox.ts';
import type { TrainExample } from '../train/trainer.ts';
import { sftLoss } from '../train/sft.ts';
import { completionIds, dpoLoss } from '../train/dpo.ts';
import { computeRewards, iouReward } from '../train/rewards.ts';
import type { TrainConfig } from '../config/config.ts';
import type { TaskRecord } from '../data/formats/records.ts';
import { checkRecord, recordWhere, sampledTokens, type ExampleSource } from './examples.ts';
import { splitSide, type SplitSide } from './split.ts';

/** One grounding question of the split: what the model answered and how its boxes landed. */
export interface QuestionResult {
  /** index into the eval examples */
  index: number;
  completion: string;
  /** at least one box parsed from the completion */
  parsed: boolean;
  iou: number;
  predicted: Box[];
  reference: Box[];
}

export interface EvalResult {
  /** trl-style names, all prefixed eval_ */
  metrics: Record<string, number>;
  /** grounding questions, in example order */
  questions: QuestionResult[];
}

export interface EvalOptions {
  model: Qwen2_5_VL;
  tokenizer: QwenTokenizer;
  examples: TrainExample[];
  config: TrainConfig;
  /** the smart_resize bounds the examples' boxes are in (default config.data) */
  pixels?: { minPixels: number; maxPixels: number };
  onProgress?: (done: number, total: number) => void;
}

/** The split's metrics from its per-question grounding results (empty when there are none). */
export function groundingMetrics(q: Pick<QuestionResult, 'parsed' | 'iou'>[]): Record<string, number> {
  if (!q.length) return {};
  const share = (f: (r: Pick<QuestionResult, 'parsed' | 'iou'>) => boolean) => q.filter(f).length / q.length;
  return {
    'eval_grounding/parse_rate': share((r) => r.parsed),
    'eval_grounding/mean_iou': q.reduce((a, r) => a + r.iou, 0) / q.length,
    'eval_grounding/acc_iou50': share((r) => r.iou >= 0.5),
    'eval_grounding/acc_iou75': share((r) => r.iou >= 0.75),
  };
}

/** A greedy completion scored against labelled boxes. */
export function scoreGrounding(index: number, completion: string, reference: Box[]): QuestionResult {
  const predicted = parseGroundings(completion).map((g) => g.bbox);
  return { index, completion, parsed: predicted.length > 0, iou: iouReward(completion, { boxes: reference }), predicted, reference };
}

const boxesOf = (text: string): Box[] => parseGroundings(text).map((g) => g.bbox);

/** Image preprocessing and greedy decoding as the evaluation runs them (evaluate() and predictGrounding() share them). */
function decoder(o: Pick<EvalOptions, 'model' | 'tokenizer' | 'config' | 'pixels'>, maxNewTokens: number) {
  const { model, tokenizer, config: c } = o;
  const px = o.pixels ?? c.data;
  const imageConfig = { ...DEFAULT_IMAGE_CONFIG, minPixels: px.minPixels, maxPixels: px.maxPixels };
  const imageOf = (images: RawImage[]): ImageInput | undefined => (images.length ? stackImages(images.map((im) => preprocessImage(im, imageConfig))) : undefined);
  const grids = (image?: ImageInput) => {
    if (!image) return [];
    const g = image.imageGridThw;
    return Array.from({ length: g.length / 3 }, (_, i) => ({ gridThw: [g[3 * i], g[3 * i + 1], g[3 * i + 2]] }));
  };
  const stop = [tokenizer.special.imEnd, tokenizer.special.endOfText];
  const greedy = async (prompt: ChatMessage[], image?: ImageInput, lora = true): Promise<string> => {
    const p = buildPrompt({ messages: prompt, images: grids(image), tokenizer });
    const [out] = await model.generate([{ inputIds: p.inputIds, images: image }], { maxNewTokens, temperature: 0, stopIds: stop, lora });
    const ended = out.length > 0 && stop.includes(out[out.length - 1]);
    return tokenizer.decode(Array.from(ended ? out.subarray(0, out.length - 1) : out));
  };
  return { imageOf, grids, greedy };
}

/** The labelled boxes (resized frame) an example's greedy answer is scored against; empty: not a grounding question. */
export function groundingReference(ex: TrainExample): Box[] {
  if (ex.kind === 'sft') {
    const answer = ex.messages[ex.messages.length - 1];
    return typeof answer.content === 'string' ? boxesOf(answer.content) : [];
  }
  return ex.kind === 'rl' ? (ex.reference.boxes ?? []) : [];
}

/** The prompt a grounding example's answer is decoded from. */
const promptOf = (ex: TrainExample): ChatMessage[] => (ex.kind === 'sft' ? ex.messages.slice(0, -1) : ex.prompt);

export async function evaluate(o: EvalOptions): Promise<EvalResult> {
  const { model, tokenizer, config: c } = o;
  const { imageOf, grids, greedy } = decoder(o, c.eval.evalMaxNewTokens);
  const completionSeq = (prompt: Int32Array, answer: string, image?: ImageInput): SeqInput => {
    const ans = completionIds(tokenizer, answer);
    const ids = new Int32Array(prompt.length + ans.length);
    ids.set(prompt);
    ids.set(ans, prompt.length);
    return { inputIds: ids, images: image, scoreStart: prompt.length };
  };

  const metrics: Record<string, number> = {};
  const questions: QuestionResult[] = [];
  const n = o.examples.length;
  if (!n) return { metrics, questions };
  let lossSum = 0, accSum = 0;
  const dpo = { pc: [] as Float32Array[], pr: [] as Float32Array[], rc: [] as Float32Array[], rr: [] as Float32Array[] };
  const completions: string[] = [], refs: { boxes?: Box[]; answer?: string }[] = [];
  for (const [i, ex] of o.examples.entries()) {
    o.onProgress?.(i, n);
    const image = imageOf(ex.images);
    if (ex.kind === 'sft') {
      // the sequence and mask exactly as the trainer scores it (trainer.ts encode): from the first answer token
      const s = buildSample({ messages: ex.messages, images: grids(image), tokenizer, maxLength: c.data.maxLength });
      const first = s.labels.findIndex((l) => l !== IGNORE_INDEX);
      const mask = Uint8Array.from(s.labels.subarray(first), (l) => (l === IGNORE_INDEX ? 0 : 1));
      const r = await model.logps({ inputIds: s.inputIds, images: image, scoreStart: first }, { lora: true, train: false });
      const res = sftLoss({ logps: r.logps, mask, hits: r.hits });
      lossSum += res.loss;
      accSum += res.metrics.mean_token_accuracy ?? 0;
      const reference = groundingReference(ex);
      if (reference.length) questions.push(scoreGrounding(i, await greedy(promptOf(ex), image), reference));
    } else if (ex.kind === 'dpo') {
      const p = buildPrompt({ messages: ex.prompt, images: grids(image), tokenizer }).inputIds;
      const ch = completionSeq(p, ex.chosen, image), rj = completionSeq(p, ex.rejected, image);
      dpo.rc.push((await model.logps(ch, { lora: false, train: false })).logps);
      dpo.rr.push((await model.logps(rj, { lora: false, train: false })).logps);
      dpo.pc.push((await model.logps(ch, { lora: true, train: false })).logps);
      dpo.pr.push((await model.logps(rj, { lora: true, train: false })).logps);
    } else {
      const text = await greedy(ex.prompt, image);
      completions.push(text);
      refs.push(ex.reference);
      if (ex.reference.boxes?.length) questions.push(scoreGrounding(i, text, ex.reference.boxes));
    }
  }
  o.onProgress?.(n, n);
  const kind = o.examples[0].kind;
  if (kind === 'sft') Object.assign(metrics, { eval_loss: lossSum / n, eval_mean_token_accuracy: accSum / n });
  else if (kind === 'dpo') {
    const res = dpoLoss({ policyChosen: dpo.pc, policyRejected: dpo.pr, refChosen: dpo.rc, refRejected: dpo.rr }, { beta: c.dpo.beta, labelSmoothing: c.dpo.labelSmoothing });
    metrics.eval_loss = res.loss;
    for (const [k, v] of Object.entries(res.metrics)) metrics[`eval_${k}`] = v;
  } else {
    const rewards = c.method === 'ppo' ? c.ppo.rewards : c.grpo.rewards;
    const r = computeRewards(completions, refs, rewards.map((name) => ({ name, weight: 1 })));
    metrics.eval_reward = r.total.reduce((a, b) => a + b, 0) / r.total.length;
    for (const [name, v] of Object.entries(r.perFunc)) {
      const ok = [...v].filter((x) => !Number.isNaN(x));
      if (ok.length) metrics[`eval_rewards/${name}/mean`] = ok.reduce((a, b) => a + b, 0) / ok.length;
    }
  }
  Object.assign(metrics, groundingMetrics(questions));
  return { metrics, questions };
}

/** One grounding question predicted by the adapter and / or the base model (the adapter switched off). */
export interface PredictedQuestion {
  /** index into the examples */
  index: number;
  adapter?: QuestionResult;
  base?: QuestionResult;
}

export interface PredictOptions extends Omit<EvalOptions, 'onProgress'> {
  /** greedy decoding length (default config.eval.evalMaxNewTokens) */
  maxNewTokens?: number;
  adapter: boolean;
  base: boolean;
  /** after each question, with the count done and the grounding questions in all */
  onQuestion?: (q: PredictedQuestion, done: number, total: number) => void;
  /** checked between questions: true stops early (the questions so far are returned) */
  cancelled?: () => boolean;
}

/**
 * The grounding questions of `examples` (the ones evaluate() scores), each decoded greedily and
 * scored exactly as evaluate() scores it (scoreGrounding), with the adapter, the base model or both:
 * what the studio's predictions over a split show per question.
 */
export async function predictGrounding(o: PredictOptions): Promise<{ questions: PredictedQuestion[]; cancelled: boolean }> {
  const { imageOf, greedy } = decoder(o, o.maxNewTokens ?? o.config.eval.evalMaxNewTokens);
  const grounded = o.examples.map((ex, index) => ({ ex, index, reference: groundingReference(ex) })).filter((t) => t.reference.length > 0);
  const questions: PredictedQuestion[] = [];
  for (const { ex, index, reference } of grounded) {
    if (o.cancelled?.()) return { questions, cancelled: true };
    const image = imageOf(ex.images);
    const q: PredictedQuestion = { index };
    if (o.adapter) q.adapter = scoreGrounding(index, await greedy(promptOf(ex), image, true), reference);
    if (o.base) q.base = scoreGrounding(index, await greedy(promptOf(ex), image, false), reference);
    questions.push(q);
    o.onQuestion?.(q, questions.length, grounded.length);
  }
  return { questions, cancelled: false };
}

/** A stored dataset's image with its records, as the studio loads it. */
export interface SplitSample<B> {
  name: string;
  blob: B;
  records: TaskRecord[];
}

export interface SplitQuestions {
  /** the grounding questions, checked as training checks them */
  examples: TrainExample[];
  /** per example: its sample, record and where it is ("image.png, record 2 of 3") */
  from: { sample: number; record: TaskRecord; where: string }[];
  /** the decoded images of the side, by sample index */
  images: Map<number, RawImage>;
  /** records of the side that are not grounding questions or fail the checks */
  skipped: number;
}

/**
 * The grounding questions of one side of a run's split, as predictions over it ask them: the
 * records keyed by image name as training keys them, the side recomputed by splitSide (with the
 * images the run held out), each image of that side decoded once and each record checked as
 * training checks it.
 */
export async function splitQuestions<B>(samples: SplitSample<B>[], c: TrainConfig, side: SplitSide, heldOut: string[] | undefined, o: { decode(blob: B): Promise<RawImage>; pixels: { minPixels: number; maxPixels: number }; tokenizer: QwenTokenizer }): Promise<SplitQuestions> {
  const all: (ExampleSource & { sample: number })[] = [];
  samples.forEach((s, i) => s.records.forEach((r, k) => all.push({ where: recordWhere(s.name, k, s.records.length), record: r, images: [{ name: s.name }], sample: i })));
  const chosen = splitSide(all, c, side, heldOut) as typeof all;
  const decoded = new Map<number, { name: string; image?: RawImage; error?: string }>();
  const r: SplitQuestions = { examples: [], from: [], images: new Map(), skipped: 0 };
  for (const src of chosen) {
    const s = samples[src.sample];
    let im = decoded.get(src.sample);
    if (!im) {
      im = await o.decode(s.blob).then((image) => ({ name: s.name, image }), (e: Error) => ({ name: s.name, error: e.message }));
      decoded.set(src.sample, im);
      if (im.image) r.images.set(src.sample, im.image);
    }
    const checked = checkRecord({ ...src, images: [im] }, { method: c.method, data: { ...o.pixels, maxLength: c.data.maxLength }, maxNewTokens: sampledTokens(c), tokenizer: o.tokenizer });
    if (checked.example && groundingReference(checked.example).length) {
      r.examples.push(checked.example);
      r.from.push({ sample: src.sample, record: src.record, where: src.where });
    } else r.skipped++;
  }
  return r;
}
