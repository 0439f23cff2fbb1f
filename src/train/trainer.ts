// The training loop shared by the Web Worker and the Node CLI. One optimizer step:
//   for each micro-batch: forward to per-token log-probs (GPU) → loss and dlogps (plain TS, in
//   sft.ts / dpo.ts / grpo.ts / ppo.ts) → backward into the LoRA grads (GPU)
//   then clip + AdamW on the GPU, one small readback of [grad norm, clip scale, flags].
// Nothing is lost: a step whose loss is NaN/Inf or spikes, whose gradients are NaN/Inf or vanish,
// or whose update would make a LoRA parameter, an AdamW moment or the PPO value head NaN/Inf is
// discarded whole (the GPU stores the update only when its flags are clear; see shaders/adamw.wgsl)
// and the run stops with a TrainingFault that says what happened and what to do.
// Sequences go through the model one at a time (micro-batch of one sequence, llm.c style); a
// "batch" is several of them with their gradients accumulated.
import type { Qwen2_5_VL, SeqInput, ImageInput } from '../model/qwen2_5_vl.ts';
import { preprocessImage, stackImages, DEFAULT_IMAGE_CONFIG, type RawImage, type ImageProcessorConfig } from '../data/image.ts';
import { buildPrompt, buildSample, IGNORE_INDEX, type ChatMessage } from '../data/template.ts';
import type { QwenTokenizer } from '../data/tokenizer.ts';
import { memory, readMany } from '../gpu/tensor.ts';
import { AdamW, ADAMW_DEFAULTS, parseGradState } from './optimizer.ts';
import { lrFactor, type ScheduleKind } from './schedule.ts';
import { Rng } from '../base/rng.ts';
import { sftLoss } from './sft.ts';
import { completionIds, dpoLoss } from './dpo.ts';
import { completionMetrics, grpoAdvantages, grpoLoss, type GrpoLossType } from './grpo.ts';
import { computeRewards, type RewardReference, type RewardSpec } from './rewards.ts';
import { PPO_DEFAULTS, ppoEpochs, ppoLoss, ppoRollout, ppoSchedule, type PpoConfig } from './ppo.ts';
import { adamwCpu } from '../ops/adamwHost.ts';
import { CheckpointError, discardCheckpointsAfter, loadNewestValidCheckpoint, saveCheckpoint, type Checkpoint, type KV, type LoadedCheckpoint } from './checkpoint.ts';

export type Method = 'sft' | 'dpo' | 'grpo' | 'ppo';

/** One training record, already decoded (images as raw pixels). */
export type TrainExample =
  | { kind: 'sft'; images: RawImage[]; messages: ChatMessage[] }
  | { kind: 'dpo'; images: RawImage[]; prompt: ChatMessage[]; chosen: string; rejected: string }
  | { kind: 'rl'; images: RawImage[]; prompt: ChatMessage[]; reference: RewardReference };

export interface TrainOptions {
  method: Method;
  optim: {
    learningRate: number;
    lrScheduler: ScheduleKind;
    warmupSteps: number;
    numEpochs: number;
    /** 0 = numEpochs over the data */
    maxSteps: number;
    /** examples per optimizer step (their gradients are accumulated) */
    batchSize: number;
    gradAccumSteps: number;
    maxGradNorm: number;
    weightDecay: number;
    seed: number;
    beta1?: number;
    beta2?: number;
    eps?: number;
  };
  data: { minPixels: number; maxPixels: number; maxLength: number };
  dpo: { beta: number; labelSmoothing?: number };
  grpo: {
    numGenerations: number;
    beta: number;
    temperature: number;
    maxNewTokens: number;
    rewards: (string | RewardSpec)[];
    epsilon?: number;
    epsilonHigh?: number;
    lossType?: GrpoLossType;
    topK?: number;
    topP?: number;
  };
  /** PPO: trl's names; generation settings as GRPO's (one completion per prompt) */
  ppo?: Partial<PpoConfig> & { temperature?: number; maxNewTokens?: number; rewards?: (string | RewardSpec)[] };
  /** save a checkpoint every N optimizer steps (0 = only when asked) */
  checkpointEvery?: number;
  /** the loss-spike stop (SFT and DPO); false turns it off. Default LOSS_SPIKE. */
  lossSpike?: Partial<LossSpikeRule> | false;
}

/**
 * A loss "far above its running median": loss > factor × median of the last `window` losses AND
 * loss − median > margin, checked once `warmup` steps are done. The median, not the mean, so one
 * earlier spike does not raise the bar; 10× because batch-to-batch noise of a per-token
 * cross-entropy (or a DPO pair loss) is a factor of 2–3, while a diverging run jumps by orders of
 * magnitude; the absolute margin (nats) keeps a converged run (median 0.01) from stopping on one
 * harder example at 0.3; the warm-up because the first losses fall fast and a median of a few
 * values means little. Not applied to GRPO/PPO, whose losses are advantage-weighted and sit
 * around 0 with either sign.
 */
export interface LossSpikeRule { factor: number; margin: number; window: number; warmup: number }
export const LOSS_SPIKE: LossSpikeRule = { factor: 10, margin: 2, window: 20, warmup: 10 };

/** The median of the recent losses when `loss` is a spike by `rule`, else undefined. */
export function lossSpike(recent: number[], loss: number, rule: LossSpikeRule = LOSS_SPIKE): number | undefined {
  if (recent.length < rule.warmup) return undefined;
  const w = recent.slice(-rule.window).filter(Number.isFinite).sort((a, b) => a - b);
  if (!w.length) return undefined;
  const median = w.length % 2 ? w[(w.length - 1) / 2] : (w[w.length / 2 - 1] + w[w.length / 2]) / 2;
  return loss > rule.factor * median && loss - median > rule.margin ? median : undefined;
}

// No defaults here: the defaults are THE config's (src/config/config.ts); session/run.ts trainOptionsOf
// builds this view of it.

export interface StepMetrics {
  step: number;
  epoch: number;
  loss: number;
  learning_rate: number;
  grad_norm: number;
  tokens_per_s: number;
  samples_per_s: number;
  gpu_bytes: number;
  /** method metrics under trl's names (rewards/chosen, reward, kl, mean_token_accuracy, ...) */
  [name: string]: number;
}

export type FaultKind = 'loss-nonfinite' | 'grad-nonfinite' | 'update-nonfinite' | 'grad-vanished' | 'loss-spike';

/**
 * A step that went wrong: it was discarded (parameters, moments, value head and data position are
 * those before it) and training stops. `lastGoodStep` is the newest step whose parameters are
 * trusted: the one before this step when only its update was bad, one further back when the
 * forward on the current parameters misbehaved (they came from the previous update). Checkpoints
 * newer than it should go: Trainer.rollback(kv, fault).
 */
export class TrainingFault extends Error {
  constructor(message: string, readonly kind: FaultKind = 'loss-nonfinite', readonly step = 0, readonly lastGoodStep = 0) {
    super(message);
    this.name = 'TrainingFault';
  }
}

interface Encoded {
  image?: ImageInput;
  /** SFT: the full sequence and its mask over scored positions */
  seq?: SeqInput;
  mask?: Uint8Array;
  kept?: number;
  /** DPO / RL: the prompt ids */
  prompt?: Int32Array;
  chosen?: SeqInput;
  rejected?: SeqInput;
  reference?: RewardReference;
}

export class Trainer {
  readonly opt: AdamW;
  step = 0;
  epoch = 0;
  /** examples consumed in the current epoch */
  position = 0;
  readonly history: StepMetrics[] = [];
  private encoded = new Map<number, Encoded>();
  /** PPO value head: H weights + a bias, on the CPU (it is tiny), with its AdamW moments */
  valueHead?: { w: Float32Array; m: Float32Array; v: Float32Array; step: number };
  /** the value head after this step's update, stored when the whole step is (see trainStep) */
  private pendingHead?: { w: Float32Array; m: Float32Array; v: Float32Array; step: number };
  /** the last TrainingFault: parameters of steps after its lastGoodStep are never checkpointed */
  private fault?: { step: number; lastGoodStep: number };
  private totalTokens = 0;
  readonly imageConfig: ImageProcessorConfig;

  constructor(
    readonly model: Qwen2_5_VL,
    readonly tokenizer: QwenTokenizer,
    readonly examples: TrainExample[],
    readonly cfg: TrainOptions,
    readonly runId = `run-${Date.now().toString(36)}`,
  ) {
    if (!examples.length) throw new Error('The dataset is empty: add at least one labelled example.');
    const want = cfg.method === 'sft' ? 'sft' : cfg.method === 'dpo' ? 'dpo' : 'rl';
    if (cfg.method === 'ppo') {
      const H = model.config.text.hiddenSize;
      this.valueHead = { w: new Float32Array(H + 1), m: new Float32Array(H + 1), v: new Float32Array(H + 1), step: 0 };
    }
    const wrong = examples.findIndex((e) => e.kind !== want);
    if (wrong >= 0) throw new Error(`Example ${wrong} is a ${examples[wrong].kind} record but the method ${cfg.method} needs ${want} records.`);
    const o = cfg.optim;
    this.opt = new AdamW(model.loraParams(), { ...ADAMW_DEFAULTS, lr: o.learningRate, weightDecay: o.weightDecay, maxGradNorm: o.maxGradNorm, beta1: o.beta1 ?? 0.9, beta2: o.beta2 ?? 0.999, eps: o.eps ?? 1e-8 });
    this.imageConfig = { ...DEFAULT_IMAGE_CONFIG, minPixels: cfg.data.minPixels, maxPixels: cfg.data.maxPixels };
  }

  /** examples per optimizer step */
  get perStep(): number {
    const mini = this.cfg.method === 'ppo' ? this.ppoConfig.numMiniBatches : 1; // trl: batch_size = per_device × grad_accum × num_mini_batches
    return Math.max(1, this.cfg.optim.batchSize) * Math.max(1, this.cfg.optim.gradAccumSteps) * mini;
  }

  /** PPO settings: trl's defaults under the run's (numPpoEpochs and numMiniBatches always set) */
  get ppoConfig(): PpoConfig & { numPpoEpochs: number; numMiniBatches: number } {
    const p = { ...PPO_DEFAULTS, ...this.cfg.ppo };
    return { ...p, numPpoEpochs: Math.max(1, p.numPpoEpochs ?? 4), numMiniBatches: Math.max(1, p.numMiniBatches ?? 1) };
  }

  /** PPO optimizer steps per trainer step (trl: num_ppo_epochs × num_mini_batches) */
  get ppoUpdates(): number {
    return this.ppoConfig.numPpoEpochs * this.ppoConfig.numMiniBatches;
  }

  get totalSteps(): number {
    const o = this.cfg.optim;
    return o.maxSteps > 0 ? o.maxSteps : Math.ceil((o.numEpochs * this.examples.length) / this.perStep);
  }

  get done(): boolean {
    return this.step >= this.totalSteps;
  }

  private dropoutSeed(microBatch: number): number {
    return (Math.imul(this.cfg.optim.seed, 2654435761) ^ Math.imul(this.step + 1, 40503) ^ microBatch) >>> 0;
  }

  /** The data order of an epoch depends only on (seed, epoch), so a resumed run sees the same order. */
  private epochOrder?: { epoch: number; order: number[] };
  private order(epoch: number): number[] {
    if (this.epochOrder?.epoch !== epoch) this.epochOrder = { epoch, order: new Rng(this.cfg.optim.seed * 1000003 + epoch).permutation(this.examples.length) };
    return this.epochOrder.order;
  }

  private nextIndices(n: number): number[] {
    const out: number[] = [];
    while (out.length < n) {
      if (this.position >= this.examples.length) {
        this.epoch++;
        this.position = 0;
      }
      out.push(this.order(this.epoch)[this.position++]);
    }
    return out;
  }

  private image(images: RawImage[]): ImageInput | undefined {
    if (!images.length) return undefined;
    const processed = images.map((im) => preprocessImage(im, this.imageConfig));
    return stackImages(processed);
  }

  private grids(image?: ImageInput) {
    if (!image) return [];
    const g = image.imageGridThw;
    return Array.from({ length: g.length / 3 }, (_, i) => ({ gridThw: [g[3 * i], g[3 * i + 1], g[3 * i + 2]] }));
  }

  private encode(i: number): Encoded {
    const hit = this.encoded.get(i);
    if (hit) return hit;
    const ex = this.examples[i];
    const image = this.image(ex.images);
    const common = { images: this.grids(image), tokenizer: this.tokenizer, maxLength: this.cfg.data.maxLength };
    let e: Encoded;
    if (ex.kind === 'sft') {
      const s = buildSample({ messages: ex.messages, ...common });
      const first = s.labels.findIndex((l) => l !== IGNORE_INDEX);
      if (first < 1) throw new Error(`Example ${i}: no answer tokens to train on.`);
      const mask = Uint8Array.from(s.labels.subarray(first), (l) => (l === IGNORE_INDEX ? 0 : 1));
      e = { image, seq: { inputIds: s.inputIds, images: image, scoreStart: first }, mask, kept: mask.reduce((a, b) => a + b, 0) };
    } else {
      const p = buildPrompt({ messages: ex.prompt, ...common });
      e = { image, prompt: p.inputIds };
      if (ex.kind === 'dpo') {
        e.chosen = this.completionSeq(p.inputIds, ex.chosen, image);
        e.rejected = this.completionSeq(p.inputIds, ex.rejected, image);
      } else e.reference = ex.reference;
    }
    this.encoded.set(i, e);
    return e;
  }

  /** prompt + completion, scored from the first completion token: a DPO answer as trl scores it (answer + <|im_end|> + "\n", dpo.ts completionIds), or sampled ids */
  private completionSeq(prompt: Int32Array, answer: string | Int32Array, image?: ImageInput): SeqInput {
    const ans = typeof answer === 'string' ? completionIds(this.tokenizer, answer) : Array.from(answer);
    const ids = new Int32Array(prompt.length + ans.length);
    ids.set(prompt);
    ids.set(ans, prompt.length);
    if (ids.length > this.cfg.data.maxLength) throw new Error(`A sequence of ${ids.length} tokens exceeds max length ${this.cfg.data.maxLength}.`);
    return { inputIds: ids, images: image, scoreStart: prompt.length };
  }

  /** The learning rate of the next step. */
  get currentLr(): number {
    return this.cfg.optim.learningRate * lrFactor({ kind: this.cfg.optim.lrScheduler, warmupSteps: this.cfg.optim.warmupSteps, totalSteps: this.totalSteps }, this.step);
  }

  /**
   * One trainer step: one optimizer step (SFT, DPO, GRPO), or for PPO one rollout and its
   * num_ppo_epochs × num_mini_batches optimizer steps. Throws TrainingFault when the step goes
   * wrong (it is then discarded whole).
   */
  async trainStep(): Promise<StepMetrics> {
    const t0 = performance.now();
    const before = { epoch: this.epoch, position: this.position };
    const d = this.step + 1;
    const lr = this.currentLr;
    // PPO's later updates build on its earlier ones: keep a copy to undo them all on a fault.
    const snap = this.cfg.method === 'ppo' && this.ppoUpdates > 1 ? this.opt.snapshot() : undefined;
    const fault = (kind: FaultKind, what: string, lastGood: number): TrainingFault => {
      this.opt.zeroGrads();
      if (snap) this.opt.restoreSnapshot(snap);
      this.pendingHead = undefined;
      this.epoch = before.epoch;
      this.position = before.position;
      this.fault = { step: d, lastGoodStep: lastGood };
      const kept = lastGood > 0 ? `the parameters of step ${lastGood} are the last good ones` : 'no trained step is trusted (the run must start again)';
      return new TrainingFault(`Step ${d}: ${what}. The step was discarded and training stopped; ${kept}. Lower the learning rate (now ${lr.toExponential(2)}; try ${(lr / 10).toExponential(1)}), or add warmup steps / a lower max_grad_norm, then resume from the last good checkpoint.`, kind, d, lastGood);
    };
    // The forward ran on the parameters the previous update produced: when it misbehaves, those
    // are suspect too, so the last good step is one further back. After one of PPO's inner updates
    // the next forward runs on parameters the discard undoes, so then this.step stays good.
    let suspect = Math.max(0, this.step - 1);
    /** clip + AdamW on the accumulated grads, checked; the value head's pending update with it */
    const update = async (loss: number, hasGrad: boolean) => {
      if (!Number.isFinite(loss)) throw fault('loss-nonfinite', `the loss became ${loss}`, suspect);
      const head = this.pendingHead; // the PPO value head's update (CPU, tiny): checked before the GPU commits
      if (head && ![head.w, head.m, head.v].every((a) => a.every(Number.isFinite))) throw fault('update-nonfinite', 'the AdamW update would have made the PPO value head (v_head) NaN/Inf', this.step);
      const state = this.opt.step(lr, { requireGrad: hasGrad });
      const [s] = await readMany([state]); // the update's one readback: norm, clip scale and every flag
      state.release();
      const gs = parseGradState(s);
      if (gs.nonFinite) throw fault('grad-nonfinite', `a LoRA gradient became NaN/Inf (or their norm overflowed)`, suspect);
      if (gs.vanished) throw fault('grad-vanished', `every LoRA gradient is exactly 0 although the loss (${loss.toPrecision(4)}) has a gradient: the activations overflowed float32 (RMSNorm's sum of squares became Inf, so it outputs 0 and nothing flows back), typically after a far too large update (or no LoRA module lies on this loss's path, e.g. vision-only LoRA on text-only examples)`, suspect);
      if (gs.updateNonFinite) throw fault('update-nonfinite', `the AdamW update would have made LoRA parameters or optimizer moments NaN/Inf`, this.step);
      this.opt.zeroGrads();
      this.opt.commit(gs);
      suspect = this.step;
      return gs;
    };
    let r: { loss: number; metrics: Record<string, number>; tokens: number; gradNorm: number };
    const idx = this.nextIndices(this.perStep);
    try {
      if (this.cfg.method === 'ppo') r = await this.ppoStep(idx, lr, update);
      else {
        const step = { sft: this.sftStep, dpo: this.dpoStep, grpo: this.grpoStep }[this.cfg.method];
        const { loss, metrics, tokens, hasGrad } = await step.call(this, idx);
        const rule = this.cfg.lossSpike === false || this.cfg.method === 'grpo' ? undefined : { ...LOSS_SPIKE, ...this.cfg.lossSpike };
        const median = rule && Number.isFinite(loss) ? lossSpike(this.history.map((h) => h.loss), loss, rule) : undefined;
        if (median !== undefined) throw fault('loss-spike', `the loss ${loss.toPrecision(4)} is ${(loss / median).toFixed(0)}× the median ${median.toPrecision(4)} of the last ${Math.min(rule!.window, this.history.length)} steps: the run is diverging`, suspect);
        r = { loss, metrics, tokens, gradNorm: (await update(loss, hasGrad)).norm };
      }
    } finally {
      for (const t of snap?.tensors ?? []) t.release();
    }
    const head = this.pendingHead;
    if (head && this.valueHead) { // checked finite with each update, stored only now that the whole step was
      this.valueHead.w.set(head.w);
      this.valueHead.m.set(head.m);
      this.valueHead.v.set(head.v);
      this.valueHead.step = head.step;
    }
    this.pendingHead = undefined;
    this.step++;
    this.totalTokens += r.tokens;
    const sec = (performance.now() - t0) / 1000;
    const m: StepMetrics = {
      ...r.metrics, step: this.step, epoch: this.epoch + this.position / this.examples.length, loss: r.loss, learning_rate: lr, grad_norm: r.gradNorm,
      tokens_per_s: r.tokens / sec, samples_per_s: idx.length / sec, gpu_bytes: memory.live, num_tokens: this.totalTokens,
    };
    this.history.push(m);
    return m;
  }

  private async sftStep(idx: number[]) {
    const enc = idx.map((i) => this.encode(i));
    // Normalise by the kept tokens of the whole accumulated batch (transformers' num_items_in_batch),
    // so accumulating N micro-batches equals one big batch.
    const normalizer = enc.reduce((s, e) => s + e.kept!, 0);
    let loss = 0, hits = 0, tokens = 0, hasGrad = false;
    for (const [k, e] of enc.entries()) {
      // LoRA dropout masks from (seed, step, micro-batch): a resumed run draws the same ones.
      const r = await this.model.logps(e.seq!, { lora: true, train: true, dropoutSeed: this.dropoutSeed(k) });
      const res = sftLoss({ logps: r.logps, mask: e.mask!, hits: r.hits, normalizer });
      this.model.backward(Float32Array.from(res.dlogps));
      hasGrad ||= res.dlogps.some((x) => x !== 0);
      loss += res.loss;
      hits += (res.metrics.mean_token_accuracy ?? 0) * res.numKept;
      tokens += e.seq!.inputIds.length;
    }
    return { loss, metrics: { mean_token_accuracy: hits / normalizer }, tokens, hasGrad };
  }

  private async dpoStep(idx: number[]) {
    const enc = idx.map((i) => this.encode(i));
    const B = enc.length;
    let loss = 0, tokens = 0, hasGrad = false;
    const metrics: Record<string, number> = {};
    // Pair by pair (bounded memory): reference log-probs with the adapter off, then the policy's two
    // train forwards (the model stacks their activations), the loss, and the two backwards, last first.
    for (const e of enc) {
      const refC = (await this.model.logps(e.chosen!, { lora: false, train: false })).logps;
      const refR = (await this.model.logps(e.rejected!, { lora: false, train: false })).logps;
      const polC = (await this.model.logps(e.chosen!, { lora: true, train: true, dropout: false })).logps;
      const polR = (await this.model.logps(e.rejected!, { lora: true, train: true, dropout: false })).logps;
      const res = dpoLoss({ policyChosen: [polC], policyRejected: [polR], refChosen: [refC], refRejected: [refR] }, { beta: this.cfg.dpo.beta, labelSmoothing: this.cfg.dpo.labelSmoothing ?? 0 });
      this.model.backward(Float32Array.from(res.dRejected[0], (d) => d / B));
      this.model.backward(Float32Array.from(res.dChosen[0], (d) => d / B));
      hasGrad ||= res.dChosen[0].some((x) => x !== 0) || res.dRejected[0].some((x) => x !== 0);
      loss += res.loss / B;
      for (const [k, v] of Object.entries(res.metrics)) metrics[k] = (metrics[k] ?? 0) + v / B;
      tokens += e.chosen!.inputIds.length + e.rejected!.inputIds.length;
    }
    return { loss, metrics, tokens, hasGrad };
  }

  private async grpoStep(idx: number[]) {
    const g = this.cfg.grpo;
    const G = g.numGenerations;
    const specs: RewardSpec[] = g.rewards.map((r) => (typeof r === 'string' ? { name: r, weight: 1 } : r));
    const { seqs, refs, texts, terminated, T, mask } = await this.rollout(idx, G, g);
    const rewards = computeRewards(texts, refs, specs);
    const adv = grpoAdvantages(rewards.total, G, { perFunc: rewards.perFunc });
    const R = seqs.length;
    const logps = new Float64Array(R * T), ref = g.beta ? new Float64Array(R * T) : undefined;
    // Reference passes first (adapter off, nothing kept), then every train forward (the model stacks
    // their activations), the loss over the whole group, and the backwards in reverse order.
    // Scored at the sampling temperature, as trl's GRPOTrainer does (logits / temperature).
    const temperature = g.temperature;
    if (ref) for (const [r, s] of seqs.entries()) (await this.model.logps(s, { lora: false, train: false, temperature })).logps.forEach((v, t) => (ref[r * T + t] = v));
    let tokens = 0;
    for (const [r, s] of seqs.entries()) {
      (await this.model.logps(s, { lora: true, train: true, dropout: false, temperature })).logps.forEach((v, t) => (logps[r * T + t] = v));
      tokens += s.inputIds.length;
    }
    const res = grpoLoss({ logps, mask, advantages: adv.advantages, cols: T, refLogps: ref }, {
      beta: g.beta, epsilon: g.epsilon ?? 0.2, epsilonHigh: g.epsilonHigh, lossType: g.lossType ?? 'grpo', maxCompletionLength: g.maxNewTokens,
    });
    for (let r = R - 1; r >= 0; r--) this.model.backward(Float32Array.from(res.dlogps.subarray(r * T, r * T + seqs[r].inputIds.length - seqs[r].scoreStart)));
    // zero advantages (every completion scored the same) and no KL: a legitimately zero gradient
    return { loss: res.loss, metrics: { ...adv.metrics, ...res.metrics, ...completionMetrics(mask, T, terminated) }, tokens, hasGrad: res.dlogps.some((x) => x !== 0) };
  }

  /** Sample completions for the prompts `idx` (n per prompt) and build their scored sequences. */
  private async rollout(idx: number[], n: number, gen: { temperature: number; maxNewTokens: number; topK?: number; topP?: number }) {
    const imEnd = this.tokenizer.special.imEnd, eos = this.tokenizer.special.endOfText;
    const seqs: SeqInput[] = [], refs: RewardReference[] = [], texts: string[] = [], terminated: boolean[] = [];
    for (const [k, i] of idx.entries()) {
      const e = this.encode(i);
      const outs = await this.model.generate(Array.from({ length: n }, () => ({ inputIds: e.prompt!, images: e.image })), {
        maxNewTokens: gen.maxNewTokens, temperature: gen.temperature, topK: gen.topK, topP: gen.topP, stopIds: [imEnd, eos],
        seed: this.cfg.optim.seed * 7919 + this.step * 131 + k, lora: true,
      });
      for (const out of outs) {
        const ended = out.length > 0 && (out[out.length - 1] === imEnd || out[out.length - 1] === eos);
        terminated.push(ended);
        texts.push(this.tokenizer.decode(Array.from(ended ? out.subarray(0, out.length - 1) : out)));
        // An empty completion still scores one token (the stop id) so every sequence has a gradient path.
        seqs.push(this.completionSeq(e.prompt!, out.length ? out : Int32Array.of(imEnd), e.image));
        refs.push(e.reference!);
      }
    }
    const T = Math.max(...seqs.map((s) => s.inputIds.length - s.scoreStart));
    const mask = new Float64Array(seqs.length * T);
    seqs.forEach((s, r) => mask.fill(1, r * T, r * T + s.inputIds.length - s.scoreStart));
    return { seqs, refs, texts, terminated, T, mask };
  }

  private values(hidden: Float32Array, w: Float32Array): Float64Array {
    const H = w.length - 1, n = hidden.length / H;
    const out = new Float64Array(n);
    for (let t = 0; t < n; t++) {
      let s = w[H];
      for (let j = 0; j < H; j++) s += w[j] * hidden[t * H + j];
      out[t] = s;
    }
    return out;
  }

  /**
   * One PPO rollout, then trl's update loop over it (ppo.ts ppoSchedule): each micro-batch recomputes
   * the new log-probs and values, each mini-batch ends with `update` (the checked AdamW step).
   */
  private async ppoStep(idx: number[], lr: number, update: (loss: number, hasGrad: boolean) => Promise<{ norm: number }>) {
    const p = this.ppoConfig;
    const specs: RewardSpec[] = (this.cfg.ppo?.rewards ?? this.cfg.grpo.rewards).map((r) => (typeof r === 'string' ? { name: r, weight: 1 } : r));
    // trl's PPOTrainer scores with logits / temperature, the temperature it sampled with.
    const temperature = this.cfg.ppo?.temperature ?? this.cfg.grpo.temperature;
    const { seqs, refs, texts, terminated, T, mask } = await this.rollout(idx, 1, { temperature, maxNewTokens: this.cfg.ppo?.maxNewTokens ?? this.cfg.grpo.maxNewTokens });
    const R = seqs.length;
    const scores = computeRewards(texts, refs, specs).total;
    const oldLogps = new Float64Array(R * T), refLogps = new Float64Array(R * T), oldValues = new Float64Array(R * T);
    const vh = this.valueHead!, H = vh.w.length - 1;
    for (const [r, s] of seqs.entries()) {
      const pol = await this.model.logps(s, { lora: true, train: false, hidden: true, temperature });
      pol.logps.forEach((v, t) => (oldLogps[r * T + t] = v));
      oldValues.set(this.values(pol.lastHidden!, vh.w), r * T);
      (await this.model.logps(s, { lora: false, train: false, temperature })).logps.forEach((v, t) => (refLogps[r * T + t] = v));
    }
    const roll = ppoRollout({ logps: oldLogps, refLogps, values: oldValues, scores, mask, cols: T }, p);

    // The rows of a micro-batch, gathered from the [R, T] rollout tensors (same T: trl pads the whole batch alike).
    const rowsOf = (a: ArrayLike<number>, rows: number[]) => {
      const out = new Float64Array(rows.length * T);
      rows.forEach((r, k) => { for (let t = 0; t < T; t++) out[k * T + t] = a[r * T + t]; });
      return out;
    };
    // The epoch order depends only on (seed, step, epoch): a resumed run takes the same updates.
    const permute = (n: number, e: number) => new Rng((Math.imul(this.cfg.optim.seed, 2654435761) ^ Math.imul(this.step + 1, 40503) ^ Math.imul(e + 1, 69069)) >>> 0).permutation(n);
    const schedule = ppoSchedule(R, { numPpoEpochs: p.numPpoEpochs, numMiniBatches: p.numMiniBatches, gradAccumSteps: Math.max(1, this.cfg.optim.gradAccumSteps) }, permute);
    let head = { w: vh.w.slice(), m: vh.m.slice(), v: vh.v.slice(), step: vh.step };
    const dw = new Float64Array(H + 1);
    let tokens = 0, miniLoss = 0, hasGrad = false, gradNorm = 0, vNorm = 0;
    const o = this.opt.cfg;
    const metrics = await ppoEpochs(schedule, async (rows, accum) => {
      // train forwards (the model stacks their activations), the clipped losses, backwards last first
      const logps = new Float64Array(rows.length * T), values = new Float64Array(rows.length * T), hidden: Float32Array[] = [];
      for (const [k, r] of rows.entries()) {
        const res = await this.model.logps(seqs[r], { lora: true, train: true, hidden: true, dropout: false, temperature });
        res.logps.forEach((v, t) => (logps[k * T + t] = v));
        values.set(this.values(res.lastHidden!, head.w), k * T);
        hidden.push(res.lastHidden!);
        tokens += seqs[r].inputIds.length;
      }
      const mk = rowsOf(mask, rows);
      const res = ppoLoss({ logps, values, oldLogps: rowsOf(oldLogps, rows), oldValues: rowsOf(oldValues, rows), advantages: rowsOf(roll.advantages, rows), returns: rowsOf(roll.returns, rows), mask: mk, cols: T }, p);
      for (let k = rows.length - 1; k >= 0; k--) {
        const s = seqs[rows[k]], n = s.inputIds.length - s.scoreStart, hr = hidden[k];
        const dh = new Float32Array(n * H);
        for (let t = 0; t < n; t++) {
          const dv = res.dvalues[k * T + t] / accum;
          for (let j = 0; j < H; j++) { dh[t * H + j] = dv * head.w[j]; dw[j] += dv * hr[t * H + j]; }
          dw[H] += dv;
        }
        this.model.backward(Float32Array.from(res.dlogps.subarray(k * T, k * T + n), (x) => x / accum), dh);
      }
      hasGrad ||= res.dlogps.some((x) => x !== 0) || res.dvalues.some((x) => x !== 0);
      miniLoss += res.loss / accum;
      return { loss: res.loss, ...res.metrics };
    }, async () => {
      // The value head is updated on the CPU with the same AdamW settings (clipped on its own norm).
      const norm = Math.hypot(...dw), clip = o.maxGradNorm > 0 ? Math.min(1, o.maxGradNorm / (norm + 1e-6)) : 1;
      const next = { w: head.w.slice(), m: head.m.slice(), v: head.v.slice(), step: head.step + 1 };
      adamwCpu(next.w, dw, next.m, next.v, { lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: o.weightDecay, step: next.step }, clip);
      this.pendingHead = next;
      const gs = await update(miniLoss, hasGrad);
      head = next;
      gradNorm += gs.norm / schedule.length / p.numMiniBatches;
      vNorm += norm / schedule.length / p.numMiniBatches;
      dw.fill(0);
      miniLoss = 0;
      hasGrad = false;
    });
    const { loss, ...rest } = metrics;
    // grad_norm and val/grad_norm: means over the step's optimizer updates
    return { loss, metrics: { ...roll.metrics, ...rest, 'val/grad_norm': vNorm, ...completionMetrics(mask, T, terminated) }, tokens, gradNorm };
  }

  // ---- checkpoints ------------------------------------------------------------------------------

  async checkpoint(): Promise<Checkpoint> {
    const sd = await this.opt.stateDict();
    return {
      runId: this.runId, step: this.step, optimizerStep: this.opt.stepCount, epoch: this.epoch, dataPosition: this.position,
      config: this.cfg, lora: sd.params, optimizer: { m: sd.m, v: sd.v }, metrics: this.history.slice(), savedAt: Date.now(),
      ...(this.valueHead ? { extra: { 'v_head.weight': { shape: [this.valueHead.w.length], data: this.valueHead.w.slice() }, 'v_head.exp_avg': { shape: [this.valueHead.w.length], data: this.valueHead.m.slice() }, 'v_head.exp_avg_sq': { shape: [this.valueHead.w.length], data: this.valueHead.v.slice() }, 'v_head.step': { shape: [1], data: Float32Array.of(this.valueHead.step) } } } : {}),
    };
  }

  /** Save a checkpoint (refused, with CheckpointError, for parameters a TrainingFault made untrusted). */
  async save(kv: KV): Promise<string> {
    if (this.fault && this.step > this.fault.lastGoodStep) {
      throw new CheckpointError(`Run "${this.runId}": not checkpointing step ${this.step}: step ${this.fault.step} failed and the parameters after step ${this.fault.lastGoodStep} are not trusted. Resume from the last good checkpoint instead.`);
    }
    return saveCheckpoint(kv, await this.checkpoint());
  }

  /**
   * After a TrainingFault: delete this run's checkpoints newer than its last good step, so the
   * latest one left is truly good. Returns the step of the checkpoint now latest (undefined: none).
   */
  async rollback(kv: KV, fault: TrainingFault): Promise<number | undefined> {
    return discardCheckpointsAfter(kv, this.runId, fault.lastGoodStep);
  }

  /** Restore the newest valid checkpoint of this run; returns false when there is none. */
  async resume(kv: KV): Promise<boolean> {
    return !!(await this.resumeFrom(kv));
  }

  /**
   * Restore the newest valid checkpoint; undefined when the run has none. `message` is set when a
   * damaged newer one was skipped (it names both); CheckpointError when every one is damaged.
   */
  async resumeFrom(kv: KV): Promise<LoadedCheckpoint | undefined> {
    const got = await loadNewestValidCheckpoint(kv, this.runId);
    if (got) this.restore(got.checkpoint);
    return got;
  }

  restore(ck: Checkpoint): void {
    this.fault = undefined;
    // Checkpoints from before optimizerStep existed took one optimizer step per trainer step (PPO
    // included: it ran one epoch), so their step is AdamW's step count.
    this.opt.loadStateDict({ params: ck.lora, m: ck.optimizer.m, v: ck.optimizer.v }, ck.optimizerStep ?? ck.step);
    this.step = ck.step;
    this.epoch = ck.epoch;
    this.position = ck.dataPosition;
    this.history.length = 0;
    this.history.push(...(ck.metrics as StepMetrics[]));
    // num_tokens is cumulative: carry it on from the last logged step, so a resumed run logs what the uninterrupted one does
    this.totalTokens = this.history.at(-1)?.num_tokens ?? 0;
    if (this.valueHead && ck.extra?.['v_head.weight']) {
      this.valueHead.w.set(ck.extra['v_head.weight'].data);
      this.valueHead.m.set(ck.extra['v_head.exp_avg'].data);
      this.valueHead.v.set(ck.extra['v_head.exp_avg_sq'].data);
      this.valueHead.step = ck.extra['v_head.step'].data[0];
    }
  }

  dispose(): void {
    this.opt.dispose();
  }
}
