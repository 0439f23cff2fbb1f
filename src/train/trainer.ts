// The training loop shared by the Web Worker and the Node CLI. One optimizer step:
//   for each micro-batch: forward to per-token log-probs (GPU) → loss and dlogps (plain TS, in
//   sft.ts / dpo.ts / grpo.ts / ppo.ts) → backward into the LoRA grads (GPU)
//   then clip + AdamW on the GPU, one small readback of [grad norm, clip scale, non-finite].
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
import { PPO_DEFAULTS, ppoLoss, ppoRollout, type PpoConfig } from './ppo.ts';
import { adamwCpu } from '../ops/adamwHost.ts';
import { loadLatestCheckpoint, saveCheckpoint, type Checkpoint, type KV } from './checkpoint.ts';

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

/** A NaN/Inf loss or gradient: training stops, the last good checkpoint stays. */
export class TrainingFault extends Error {
  constructor(message: string) {
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
    return Math.max(1, this.cfg.optim.batchSize) * Math.max(1, this.cfg.optim.gradAccumSteps);
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

  /** One optimizer step. Throws TrainingFault on a NaN/Inf loss or gradient (nothing is updated). */
  async trainStep(): Promise<StepMetrics> {
    const t0 = performance.now();
    const idx = this.nextIndices(this.perStep);
    const step = { sft: this.sftStep, dpo: this.dpoStep, grpo: this.grpoStep, ppo: this.ppoStep }[this.cfg.method];
    const { loss, metrics, tokens } = await step.call(this, idx);
    if (!Number.isFinite(loss)) {
      this.opt.zeroGrads();
      throw new TrainingFault(`The loss became ${loss} at step ${this.step + 1}: training stopped. Lower the learning rate or check the data; the last saved checkpoint is kept.`);
    }
    const lr = this.cfg.optim.learningRate * lrFactor({ kind: this.cfg.optim.lrScheduler, warmupSteps: this.cfg.optim.warmupSteps, totalSteps: this.totalSteps }, this.step);
    const state = this.opt.step(lr);
    const [s] = await readMany([state]);
    state.release();
    const gs = parseGradState(s);
    this.opt.zeroGrads();
    if (gs.nonFinite) throw new TrainingFault(`A gradient became NaN/Inf at step ${this.step + 1}: the update was skipped and training stopped; the last saved checkpoint is kept.`);
    this.opt.commit(gs);
    this.step++;
    this.totalTokens += tokens;
    const sec = (performance.now() - t0) / 1000;
    const m: StepMetrics = {
      ...metrics, step: this.step, epoch: this.epoch + this.position / this.examples.length, loss, learning_rate: lr, grad_norm: gs.norm,
      tokens_per_s: tokens / sec, samples_per_s: idx.length / sec, gpu_bytes: memory.live, num_tokens: this.totalTokens,
    };
    this.history.push(m);
    return m;
  }

  private async sftStep(idx: number[]) {
    const enc = idx.map((i) => this.encode(i));
    // Normalise by the kept tokens of the whole accumulated batch (transformers' num_items_in_batch),
    // so accumulating N micro-batches equals one big batch.
    const normalizer = enc.reduce((s, e) => s + e.kept!, 0);
    let loss = 0, hits = 0, tokens = 0;
    for (const [k, e] of enc.entries()) {
      // LoRA dropout masks from (seed, step, micro-batch): a resumed run draws the same ones.
      const r = await this.model.logps(e.seq!, { lora: true, train: true, dropoutSeed: this.dropoutSeed(k) });
      const res = sftLoss({ logps: r.logps, mask: e.mask!, hits: r.hits, normalizer });
      this.model.backward(Float32Array.from(res.dlogps));
      loss += res.loss;
      hits += (res.metrics.mean_token_accuracy ?? 0) * res.numKept;
      tokens += e.seq!.inputIds.length;
    }
    return { loss, metrics: { mean_token_accuracy: hits / normalizer }, tokens };
  }

  private async dpoStep(idx: number[]) {
    const enc = idx.map((i) => this.encode(i));
    const B = enc.length;
    let loss = 0, tokens = 0;
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
      loss += res.loss / B;
      for (const [k, v] of Object.entries(res.metrics)) metrics[k] = (metrics[k] ?? 0) + v / B;
      tokens += e.chosen!.inputIds.length + e.rejected!.inputIds.length;
    }
    return { loss, metrics, tokens };
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
    return { loss: res.loss, metrics: { ...adv.metrics, ...res.metrics, ...completionMetrics(mask, T, terminated) }, tokens };
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

  private values(hidden: Float32Array): Float64Array {
    const { w } = this.valueHead!;
    const H = w.length - 1, n = hidden.length / H;
    const out = new Float64Array(n);
    for (let t = 0; t < n; t++) {
      let s = w[H];
      for (let j = 0; j < H; j++) s += w[j] * hidden[t * H + j];
      out[t] = s;
    }
    return out;
  }

  private async ppoStep(idx: number[]) {
    const p = { ...PPO_DEFAULTS, ...this.cfg.ppo };
    const specs: RewardSpec[] = (this.cfg.ppo?.rewards ?? this.cfg.grpo.rewards).map((r) => (typeof r === 'string' ? { name: r, weight: 1 } : r));
    // trl's PPOTrainer scores with logits / temperature, the temperature it sampled with.
    const temperature = this.cfg.ppo?.temperature ?? this.cfg.grpo.temperature;
    const { seqs, refs, texts, terminated, T, mask } = await this.rollout(idx, 1, { temperature, maxNewTokens: this.cfg.ppo?.maxNewTokens ?? this.cfg.grpo.maxNewTokens });
    const R = seqs.length;
    const scores = computeRewards(texts, refs, specs).total;
    const oldLogps = new Float64Array(R * T), refLogps = new Float64Array(R * T), oldValues = new Float64Array(R * T);
    for (const [r, s] of seqs.entries()) {
      const pol = await this.model.logps(s, { lora: true, train: false, hidden: true, temperature });
      pol.logps.forEach((v, t) => (oldLogps[r * T + t] = v));
      oldValues.set(this.values(pol.lastHidden!), r * T);
      (await this.model.logps(s, { lora: false, train: false, temperature })).logps.forEach((v, t) => (refLogps[r * T + t] = v));
    }
    const roll = ppoRollout({ logps: oldLogps, refLogps, values: oldValues, scores, mask, cols: T }, p);
    // One PPO epoch over the batch: train forwards (stacked), the clipped losses, backwards last first.
    const logps = new Float64Array(R * T), values = new Float64Array(R * T), hidden: Float32Array[] = [];
    let tokens = 0;
    for (const [r, s] of seqs.entries()) {
      const res = await this.model.logps(s, { lora: true, train: true, hidden: true, dropout: false, temperature });
      res.logps.forEach((v, t) => (logps[r * T + t] = v));
      values.set(this.values(res.lastHidden!), r * T);
      hidden.push(res.lastHidden!);
      tokens += s.inputIds.length;
    }
    const res = ppoLoss({ logps, values, oldLogps, oldValues, advantages: roll.advantages, returns: roll.returns, mask, cols: T }, p);
    const vh = this.valueHead!, H = vh.w.length - 1, dw = new Float64Array(H + 1);
    for (let r = R - 1; r >= 0; r--) {
      const n = seqs[r].inputIds.length - seqs[r].scoreStart, hr = hidden[r];
      const dh = new Float32Array(n * H);
      for (let t = 0; t < n; t++) {
        const dv = res.dvalues[r * T + t];
        for (let j = 0; j < H; j++) { dh[t * H + j] = dv * vh.w[j]; dw[j] += dv * hr[t * H + j]; }
        dw[H] += dv;
      }
      this.model.backward(Float32Array.from(res.dlogps.subarray(r * T, r * T + n)), dh);
    }
    // The value head is updated on the CPU with the same AdamW settings (clipped on its own norm).
    const o = this.opt.cfg, norm = Math.hypot(...dw), clip = o.maxGradNorm > 0 ? Math.min(1, o.maxGradNorm / (norm + 1e-6)) : 1;
    const lr = this.cfg.optim.learningRate * lrFactor({ kind: this.cfg.optim.lrScheduler, warmupSteps: this.cfg.optim.warmupSteps, totalSteps: this.totalSteps }, this.step);
    adamwCpu(vh.w, dw, vh.m, vh.v, { lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: o.weightDecay, step: ++vh.step }, clip);
    return { loss: res.loss, metrics: { ...roll.metrics, ...res.metrics, 'val/grad_norm': norm, ...completionMetrics(mask, T, terminated) }, tokens };
  }

  // ---- checkpoints ------------------------------------------------------------------------------

  async checkpoint(): Promise<Checkpoint> {
    const sd = await this.opt.stateDict();
    return {
      runId: this.runId, step: this.step, epoch: this.epoch, dataPosition: this.position,
      config: this.cfg, lora: sd.params, optimizer: { m: sd.m, v: sd.v }, metrics: this.history.slice(), savedAt: Date.now(),
      ...(this.valueHead ? { extra: { 'v_head.weight': { shape: [this.valueHead.w.length], data: this.valueHead.w.slice() }, 'v_head.exp_avg': { shape: [this.valueHead.w.length], data: this.valueHead.m.slice() }, 'v_head.exp_avg_sq': { shape: [this.valueHead.w.length], data: this.valueHead.v.slice() }, 'v_head.step': { shape: [1], data: Float32Array.of(this.valueHead.step) } } } : {}),
    };
  }

  async save(kv: KV): Promise<string> {
    return saveCheckpoint(kv, await this.checkpoint());
  }

  /** Restore the latest checkpoint of this run; returns false when there is none. */
  async resume(kv: KV): Promise<boolean> {
    const ck = await loadLatestCheckpoint(kv, this.runId);
    if (!ck) return false;
    this.restore(ck);
    return true;
  }

  restore(ck: Checkpoint): void {
    this.opt.loadStateDict({ params: ck.lora, m: ck.optimizer.m, v: ck.optimizer.v }, ck.step);
    this.step = ck.step;
    this.epoch = ck.epoch;
    this.position = ck.dataPosition;
    this.history.length = 0;
    this.history.push(...(ck.metrics as StepMetrics[]));
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
