// Qwen2.5-VL on WebGPU: forward to per-token log-probs, backward to every LoRA parameter.
//
//   images ─ vision tower (vision.ts; cached per image content while it runs without LoRA) ─▶ image_embeds [M, H]
//   ids ─ embed_tokens ─▶ x [L, H], image_embeds scattered into the <|image_pad|> rows
//   M-RoPE positions (data/ropeIndex.ts) ─▶ cos/sin tables [L, D/2]
//   decoder layers (text.ts): RMSNorm → GQA attention (q/k/v bias, M-RoPE) → RMSNorm → SwiGLU,
//     LoRA on q, k, v, o, gate, up, down
//   final RMSNorm ─▶ only the scored rows ─▶ lm_head in vocabulary shards + log-softmax gather
//     ─▶ logp[t] = log p(ids[t] | ids[<t]) for t ≥ scoreStart
//
// Training: logps(seq, { train: true }) keeps what the backward needs (every layer's activations,
// or only each layer's input with recompute); backward(dlogps) walks back through the lm_head
// (recomputing each logits chunk), the final norm and the layers, accumulating into lora grads.
// Saved forwards form a stack: backward() consumes the most recent one not yet backpropagated, so
// DPO / GRPO can run several train forwards, compute the loss, then backward each (last first).
// The reference policy is the same weights with lora: false.
//
// LoRA dropout (peft's lora_dropout) applies in train forwards only: each module's branch reads
// dropout(x) with a mask hashed from (seed of the forward, module, element), so nothing is stored;
// the backward (and a recomputed layer) redraws the same mask from the seed kept with the forward.
// Vision LoRA: with any vision module adapted (and lora on), the tower runs uncached with the
// adapter; a train forward keeps its activations and the backward continues from the image rows
// of d inputs_embeds into the tower (vision.ts visionBackward).
import { gpu } from '../gpu/device.ts';
import { flush } from '../gpu/kernel.ts';
import { fromData, readMany, trimPool, zeros, type Tensor } from '../gpu/tensor.ts';
import { embedding } from '../ops/embedding.ts';
import { fill, gatherRows, scaleInPlace, scatterRows } from '../ops/elementwise.ts';
import { dropoutStream } from '../ops/dropoutMask.ts';
import { rmsnorm, rmsnormBackward } from '../ops/rmsnorm.ts';
import { mropeTables, type RopeTables } from '../ops/rope.ts';
import { getRopeIndex } from '../data/ropeIndex.ts';
import { parseConfig, type QwenVLConfig } from './config.ts';
import { uploadWeights, type GpuWeights, type UploadProgress } from './gpuWeights.ts';
import { quantPlan } from './quant.ts';
import { isNf4 } from '../gpu/nf4.ts';
import { defaultLoraConfig, initLora, peftKey, type LoraAdapter, type LoraConfig } from './lora.ts';
import { checkMemory, estimateMemory, gib, mib, neededSplits } from './memory.ts';
import { MissingFileError, type ModelSource } from './sources/source.ts';
import type { LoadWarning, TensorLayout } from './weights.ts';
import {
  layerBackward, layerForward, lmHeadBackward, lmHeadScore, logitsChunk, releaseActs, releaseBlocks, rowsPerBlock,
  type GpuLoraModule, type LayerActs, type LmHeadPath, type ScoreBlock, type TextCtx,
} from './text.ts';
import { releaseVisionSaved, visionAdapted, visionBackward, visionForward, type VisionCapture, type VisionSaved } from './vision.ts';
import { generateDetailed, type GenerateOptions, type Generated, type GenHost, type Prompt } from './generate.ts';
import { ImageCache, type ImageInput } from './imageCache.ts';

export type { ImageInput };

export interface SeqInput {
  inputIds: Int32Array;
  images?: ImageInput;
  /** first position t whose token ids[t] is scored: logp[t] = log p(ids[t] | ids[<t]) from logits row t−1 */
  scoreStart: number;
}

export interface LoadOptions {
  onProgress?(p: UploadProgress): void;
  /** create a fresh adapter with this config (peft init, seeded by loraSeed) */
  lora?: LoraConfig;
  loraSeed?: number;
  /** per-layer recomputation in the backward (keeps only each layer's input) */
  recompute?: boolean;
  /** GPU bytes the caller can give (WebGPU does not report memory); refuse above it */
  budgetBytes?: number;
  /** the workload the memory check sizes activations for (default one 448×448 image + 256 text tokens) */
  plan?: { images: { height: number; width: number }[]; textTokens: number };
  /** longest sequence accepted (default max_position_embeddings) */
  contextLength?: number;
  /** vocabulary rows per lm_head shard (default 16384, capped by the binding limit) */
  vocabChunk?: number;
  signal?: AbortSignal;
  /** 4-bit NF4 base (QLoRA): quantise the Linear layers on load (model/quant.ts); a bitsandbytes
   *  4-bit checkpoint (config.json quantization_config) loads as NF4 without it */
  quantize?: 'nf4';
  /** with NF4, quantise the vision tower's Linear layers too (default true, as bitsandbytes) */
  quantizeVision?: boolean;
}

export interface LogpsResult {
  /** [L − scoreStart] */
  logps: Float32Array;
  /** [L − scoreStart] 1 where the argmax of the predicting row is the scored token */
  hits: Uint8Array;
  /** [L − scoreStart, H] final-norm hidden states of the predicting rows (opts.hidden; a PPO value head) */
  lastHidden?: Float32Array;
}

/** What capture.ts (parity and debugging) reads of a model: the parts of its forward. */
export interface CaptureHost {
  config: QwenVLConfig;
  ctx(lora: boolean): TextCtx;
  prepare(seq: { inputIds: Int32Array; images?: ImageInput }, ctx: TextCtx, o: { captureVision?: boolean }): Promise<{ x: Tensor; rope: RopeTables; positionIds: Int32Array; ropeDelta: number; vision?: VisionCapture; imageEmbeds?: Tensor }>;
  finalNorm: Tensor;
  allLogits(ctx: TextCtx, hidden: Tensor): Promise<Float32Array>;
}

/** Options of a forward to log-probs. */
export interface LogpsOptions {
  /** apply the adapter */
  lora: boolean;
  /** keep the activations for backward() (needs lora: true); LoRA dropout applies */
  train: boolean;
  /** also return the final-norm hidden states of the predicting rows */
  hidden?: boolean;
  /**
   * seed of this train forward's LoRA dropout masks (any number, used as a u32; ignored unless
   * `train` and lora_dropout > 0); default: an internal counter, so every train forward draws new
   * masks. Pass a different one per forward (e.g. from step and micro-batch) to make runs repeatable.
   */
  dropoutSeed?: number;
  /** false: no LoRA dropout even in a train forward (trl's DPO disables dropout); default true */
  dropout?: boolean;
  /**
   * score log_softmax(logits / temperature), default 1: trl's GRPO and PPO score completions at the
   * temperature they were sampled with. Applied as final-norm states / temperature (the lm_head is
   * linear without bias), so the vocabulary kernels are unchanged; lastHidden stays unscaled.
   */
  temperature?: number;
}

interface Saved {
  L: number;
  loraOn: boolean;
  /** LoRA dropout of the forward (p, seed): the backward redraws the same masks */
  dropout?: { p: number; seed: number };
  /** the vision tower's kept forward (vision LoRA) and the image-pad rows (i32) */
  vision?: VisionSaved;
  imgRows?: Tensor;
  rope: RopeTables;
  /** input of every layer (inputs[0] = inputs_embeds) */
  inputs: Tensor[];
  /** per layer, unless recomputing */
  acts?: LayerActs[];
  /** last layer's output and the final norm's 1/rms */
  xFinal: Tensor;
  rstdF: Tensor;
  rows: Int32Array;
  blocks: ScoreBlock[];
  /** 1 / the forward's temperature */
  invT: number;
}

interface Prepared { x: Tensor; rope: RopeTables; positionIds: Int32Array; ropeDelta: number; L: number }

interface PrepareOptions {
  /** run the tower with capture (golden intermediates) and return image_embeds */
  captureVision?: boolean;
  /** keep the tower's activations for the backward (a train forward with vision LoRA) */
  keepVision?: boolean;
}

/** config.json of a model source, parsed (a missing file says what a model folder needs). */
export async function readModelConfig(source: ModelSource): Promise<QwenVLConfig> {
  let bytes: Uint8Array;
  try {
    bytes = await source.read('config.json');
  } catch (e) {
    if (e instanceof MissingFileError) throw new Error(`${source.id}: config.json is missing: a model folder needs config.json next to its safetensors`);
    throw e;
  }
  return parseConfig(new TextDecoder().decode(bytes), `${source.id}: config.json`);
}

export class Qwen2_5_VL {
  /** the model's recompute setting (per-layer recomputation in the backward) */
  recompute: boolean;
  /** scored rows per lm_head block (default: what one binding of [rows, vocabChunk] logits allows) */
  scoreRowBlock?: number;
  /** lm_head + log-softmax implementation: 'fused' or 'chunked' (default: text.ts lmHeadPath, by adapter) */
  lmHead?: LmHeadPath;
  /** notes about settings this engine does not honour */
  readonly warnings: string[] = [];
  /** the weight loader's notes, structured (weights.ts LoadWarning) */
  loadWarnings: LoadWarning[] = [];
  private lora = new Map<string, GpuLoraModule>();
  /** seeds of train forwards that are not given one */
  private dropoutCounter = 0;
  private adapterConfig?: LoraConfig;
  private imageCache = new ImageCache();
  private saved: Saved[] = [];
  private disposed = false;
  readonly contextLength: number;

  private constructor(readonly config: QwenVLConfig, private w: GpuWeights, opts: LoadOptions) {
    this.recompute = opts.recompute ?? false;
    this.contextLength = opts.contextLength ?? config.text.maxPositionEmbeddings;
  }

  /**
   * Read config.json, check the memory estimate against the adapter, stream the weights onto the
   * GPU. Needs an initialised device (initGpu / nodeGpu). On failure nothing stays on the GPU.
   */
  static async load(source: ModelSource, opts: LoadOptions = {}): Promise<Qwen2_5_VL> {
    const g = gpu();
    const config = await readModelConfig(source);
    const quant = quantPlan(config, opts, `${source.id}: config.json`);
    Qwen2_5_VL.checkMemory(config, g.limits, opts);
    const w = await uploadWeights(source, config, { onProgress: opts.onProgress, vocabChunk: opts.vocabChunk, signal: opts.signal, quant: quant.quantize || quant.prequantized ? quant : undefined });
    const m = new Qwen2_5_VL(config, w, opts);
    m.loadWarnings = w.loadWarnings; // the front ends print / show these (messages also in m.warnings)
    m.warnings.push(...w.loadWarnings.map((x) => x.message));
    try {
      if (opts.lora) m.setAdapter(initLora(config, opts.lora, opts.loraSeed ?? 0));
      flush();
      await g.device.queue.onSubmittedWorkDone();
    } catch (e) {
      m.dispose();
      throw e;
    }
    return m;
  }

  /** Refuse, with the numbers, a model whose LoRA step would not fit the adapter. */
  static checkMemory(config: QwenVLConfig, limits: Record<string, number>, opts: LoadOptions = {}): void {
    const plan = opts.plan ?? { images: [{ height: 448, width: 448 }], textTokens: 256 };
    // NF4 when asked to quantise or when the checkpoint is bitsandbytes 4-bit (model/quant.ts)
    const q = quantPlan(config, opts);
    const est = estimateMemory({ config, lora: opts.lora ?? defaultLoraConfig(), images: plan.images, textTokens: plan.textTokens, recompute: opts.recompute ?? false, quantize: q.quantize || q.prequantized ? 'nf4' : undefined, quantizeVision: q.quantizeVision, doubleQuant: q.doubleQuant });
    const lim = { maxBufferSize: limits.maxBufferSize, maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize };
    const chk = checkMemory(est, lim, { budgetBytes: opts.budgetBytes, canSplit: true });
    // the vocabulary tables and the logits chunk are split / row-blocked here; nothing else is
    const split = new Set(['model.embed_tokens.weight', 'lm_head.weight', 'logits chunk', 'dlogits chunk']);
    const bad = neededSplits(est.buffers, lim).filter((s) => !split.has(s.name));
    const problems = [...(chk.ok ? [] : [chk.message]), ...bad.map((s) => `${s.name} needs ${mib(s.bytes)} in one buffer, above this adapter's limit of ${mib(s.limit)}`)];
    if (problems.length) throw new Error(`Cannot load ${config.text.numHiddenLayers}-layer Qwen2.5-VL (estimated ${gib(est.totalBytes)} for a LoRA step of ${est.seqLen} tokens): ${problems.join('; ')}`);
  }

  // ---------------------------------------------------------------- adapter

  /**
   * Replace the adapter (text and vision modules); gradients start at zero, pending train forwards
   * are dropped, and loraParams() returns new tensors (an optimizer must fetch them again).
   */
  setAdapter(a: LoraAdapter): void {
    this.live();
    this.releaseSaved();
    this.releaseLora();
    try {
      for (const m of a.modules.values()) {
        const l = { spec: m, stream: dropoutStream(m.name) } as unknown as GpuLoraModule;
        this.lora.set(m.name, l); // released with the rest if a later upload fails
        l.A = fromData(m.A, [m.r, m.inFeatures], 'f32', `${m.name}.lora_A`);
        l.B = fromData(m.B, [m.outFeatures, m.r], 'f32', `${m.name}.lora_B`);
        l.gA = zeros([m.r, m.inFeatures], 'f32', `${m.name}.lora_A.grad`);
        l.gB = zeros([m.outFeatures, m.r], 'f32', `${m.name}.lora_B.grad`);
      }
    } catch (e) {
      this.releaseLora();
      throw e;
    }
    this.adapterConfig = a.config;
  }

  /** A fresh peft-initialised adapter (A kaiming-uniform, B zeros). */
  initAdapter(cfg: LoraConfig, seed = 0): void {
    this.setAdapter(initLora(this.config, cfg, seed));
  }

  /** The adapter read back from the GPU. */
  async adapter(): Promise<LoraAdapter> {
    this.live();
    if (!this.adapterConfig || !this.lora.size) throw new Error('the model has no LoRA adapter (load with opts.lora, initAdapter or loadAdapter)');
    const mods = [...this.lora.values()];
    const data = await readMany(mods.flatMap((m) => [m.A, m.B]));
    const modules = new Map(mods.map((m, i) => [m.spec.name, { ...m.spec, A: data[2 * i] as Float32Array, B: data[2 * i + 1] as Float32Array }]));
    return { config: this.adapterConfig, modules };
  }

  /** Every LoRA tensor and its gradient, named by peft key (transformers ≥ 4.52 layout). */
  loraParams(): { name: string; param: Tensor; grad: Tensor }[] {
    return [...this.lora.values()].flatMap((m) => [
      { name: peftKey(m.spec.name, 'A'), param: m.A, grad: m.gA },
      { name: peftKey(m.spec.name, 'B'), param: m.B, grad: m.gB },
    ]);
  }

  zeroGrads(): void {
    for (const m of this.lora.values()) {
      fill(m.gA, 0);
      fill(m.gB, 0);
    }
  }

  // ---------------------------------------------------------------- forward

  private ctx(loraOn: boolean, dropout?: { p: number; seed: number }): TextCtx {
    return { cfg: this.config, w: this.w, lora: this.lora, loraOn, rowBlock: this.scoreRowBlock, lmHead: this.lmHead, ...(dropout ? { dropout } : {}) };
  }

  /**
   * Base vision tower output [M, H] (no LoRA) for the images of a sequence, cached by content (LRU). The cache
   * holds promises, so concurrent calls for one image run the tower once. Owned by the cache: do
   * not release.
   */
  async imageEmbeds(img: ImageInput): Promise<Tensor> {
    this.live();
    return this.imageCache.get(img, () => visionForward(this.ctx(false), img.pixelValues, img.imageGridThw).then((r) => r.imageEmbeds));
  }

  clearImageCache(): void {
    this.imageCache.clear();
  }


  /**
   * inputs_embeds [L, H] (image rows scattered in), M-RoPE tables and positions. The tower runs
   * through the cache unless this pass adapts vision modules (then its output depends on the adapter).
   */
  private async prepare(seq: { inputIds: Int32Array; images?: ImageInput }, ctx: TextCtx, o: PrepareOptions = {}): Promise<Prepared & { vision?: VisionCapture; imageEmbeds?: Tensor; visionSaved?: VisionSaved; imgRows?: Int32Array }> {
    this.live();
    const cfg = this.config, t = cfg.text, ids = seq.inputIds, L = ids.length;
    if (!L) throw new Error('input_ids is empty');
    if (L > this.contextLength) throw new Error(`sequence of ${L} tokens is longer than the model's context of ${this.contextLength} tokens`);
    const imgRows: number[] = [];
    for (let i = 0; i < L; i++) {
      const id = ids[i];
      if (!(Number.isInteger(id) && id >= 0 && id < t.vocabSize)) throw new Error(`token id ${id} at position ${i} is outside the vocabulary (${t.vocabSize})`);
      if (id === cfg.imageTokenId) imgRows.push(i);
    }
    let img: Tensor | undefined, vision: VisionCapture | undefined, visionSaved: VisionSaved | undefined;
    const own = o.captureVision || visionAdapted(ctx); // a tower run of our own, not the cache's
    if (imgRows.length) {
      if (!seq.images) throw new Error(`input_ids hold ${imgRows.length} image tokens but no images were given`);
      if (own) {
        const r = await visionForward(ctx, seq.images.pixelValues, seq.images.imageGridThw, { capture: o.captureVision, keep: o.keepVision && visionAdapted(ctx), recompute: this.recompute });
        img = r.imageEmbeds;
        vision = r.capture;
        visionSaved = r.saved;
      } else img = await this.imageEmbeds(seq.images);
      if (img.shape[0] !== imgRows.length) {
        if (own) img.release();
        if (visionSaved) releaseVisionSaved(visionSaved);
        throw new Error(`input_ids hold ${imgRows.length} image tokens but the images give ${img.shape[0]} features`);
      }
    }
    const ri = getRopeIndex(
      { inputIds: ids, imageGridThw: imgRows.length ? seq.images!.imageGridThw : undefined },
      { imageTokenId: cfg.imageTokenId, visionStartTokenId: cfg.visionStartTokenId, spatialMergeSize: cfg.vision.spatialMergeSize, videoTokenId: cfg.videoTokenId },
    );
    const idsT = fromData(ids, [L], 'i32', 'input_ids');
    const x = embedding(idsT, this.w.embed.map((s) => s.t));
    idsT.release();
    if (img) {
      const idx = fromData(Int32Array.from(imgRows), [imgRows.length], 'i32', 'image_rows');
      scatterRows(img, idx, x);
      idx.release();
    }
    const rope = mropeTables(ri.positionIds, L, t.mropeSection, t.ropeTheta, t.headDim);
    if (img && own && !o.captureVision) img.release();
    return {
      x, rope, positionIds: ri.positionIds, ropeDelta: ri.ropeDeltas[0], L, vision, imageEmbeds: o.captureVision ? img : undefined,
      ...(visionSaved ? { visionSaved, imgRows: Int32Array.from(imgRows) } : {}),
    };
  }

  /**
   * Per-token log-probs of ids[scoreStart..L−1] and argmax hits; with `train`, the activations the
   * backward needs are kept (needs lora: true: the base weights are frozen) and LoRA dropout
   * (the adapter's lora_dropout) applies, with masks seeded by `dropoutSeed`.
   */
  async logps(seq: SeqInput, opts: LogpsOptions): Promise<LogpsResult> {
    const L = seq.inputIds.length, H = this.config.text.hiddenSize;
    if (!(Number.isInteger(seq.scoreStart) && seq.scoreStart >= 1 && seq.scoreStart <= L)) throw new Error(`scoreStart ${seq.scoreStart} must be in [1, ${L}] (the first token has no prediction)`);
    if (opts.train && !(opts.lora && this.lora.size)) throw new Error('train: true needs a LoRA adapter and lora: true (the base weights are frozen)');
    const T = opts.temperature ?? 1;
    if (!(T > 0 && Number.isFinite(T))) throw new Error(`temperature must be a positive number, got ${T}`);
    const S = L - seq.scoreStart;
    const rows = new Int32Array(S), targets = new Int32Array(S);
    for (let i = 0; i < S; i++) {
      rows[i] = seq.scoreStart - 1 + i;
      targets[i] = seq.inputIds[seq.scoreStart + i];
    }
    const pDrop = this.adapterConfig?.loraDropout ?? 0;
    const dropout = opts.train && pDrop > 0 && opts.dropout !== false ? { p: pDrop, seed: (opts.dropoutSeed ?? this.dropoutCounter++) >>> 0 } : undefined;
    const ctx = this.ctx(opts.lora, dropout);
    const p = await this.prepare(seq, ctx, { keepVision: opts.train });
    const keepActs = opts.train && !this.recompute;
    const inputs: Tensor[] = [], acts: LayerActs[] = [];
    let x = p.x;
    for (let li = 0; li < this.config.text.numHiddenLayers; li++) {
      const r = layerForward(ctx, li, x, p.rope, { keep: keepActs });
      if (opts.train) inputs.push(x);
      else x.release();
      if (r.acts) acts.push(r.acts);
      x = r.out;
    }
    const nf = rmsnorm(x, this.w.get('model.norm.weight'), this.config.text.rmsNormEps);
    if (T !== 1) scaleInPlace(nf.y, 1 / T);
    const blocks = S ? lmHeadScore(ctx, nf.y, rows, targets, opts.train) : [];
    nf.y.release();
    const back = await readMany([...blocks.flatMap((b) => [b.logp, b.argmax]), ...(opts.hidden ? blocks.map((b) => b.hs) : [])]);
    const logps = new Float32Array(S), hits = new Uint8Array(S);
    const lastHidden = opts.hidden ? new Float32Array(S * H) : undefined;
    blocks.forEach((b, i) => {
      logps.set(back[2 * i] as Float32Array, b.start);
      const am = back[2 * i + 1] as Int32Array;
      for (let j = 0; j < b.n; j++) hits[b.start + j] = am[j] === targets[b.start + j] ? 1 : 0;
      lastHidden?.set(back[2 * blocks.length + i] as Float32Array, b.start * H);
    });
    if (lastHidden && T !== 1) for (let i = 0; i < lastHidden.length; i++) lastHidden[i] *= T;
    if (opts.train) {
      const imgRows = p.imgRows ? fromData(p.imgRows, [p.imgRows.length], 'i32', 'image_rows') : undefined;
      this.saved.push({ L, loraOn: opts.lora, dropout, vision: p.visionSaved, imgRows, rope: p.rope, inputs, acts: keepActs ? acts : undefined, xFinal: x, rstdF: nf.rstd, rows, blocks, invT: 1 / T });
    } else {
      for (const t of [x, nf.rstd, p.rope.cos, p.rope.sin]) t.release();
      releaseBlocks(blocks);
    }
    return { logps, hits, ...(lastHidden ? { lastHidden } : {}) };
  }

  /** Train forwards whose backward has not run yet. */
  get pendingBackward(): number {
    return this.saved.length;
  }

  /**
   * Backward of the most recent train forward not yet backpropagated: dlogps [L − scoreStart]
   * (d loss / d logps), optionally dhidden [L − scoreStart, H] (a value head on lastHidden).
   * Accumulates into the LoRA gradients; frees that forward's activations.
   */
  backward(dlogps: Float32Array, dhidden?: Float32Array): void {
    this.live();
    const s = this.saved.pop();
    if (!s) throw new Error('backward: no train forward to backpropagate (call logps with train: true first)');
    try {
      const H = this.config.text.hiddenSize;
      if (dlogps.length !== s.rows.length) throw new Error(`backward: dlogps has ${dlogps.length} values but the forward scored ${s.rows.length} tokens`);
      if (dhidden && dhidden.length !== s.rows.length * H) throw new Error(`backward: dhidden has ${dhidden.length} values, expected ${s.rows.length}×${H}`);
      const ctx = this.ctx(s.loraOn, s.dropout);
      // The scored rows were final-norm states × invT: a value head's dhidden (on unscaled states)
      // enters scaled by T so that the common × invT below leaves it as it was.
      const dlast = lmHeadBackward(ctx, s.blocks, s.rows, dlogps, s.L, dhidden && s.invT !== 1 ? dhidden.map((v) => v / s.invT) : dhidden);
      if (s.invT !== 1) scaleInPlace(dlast, s.invT);
      let d = rmsnormBackward(dlast, s.xFinal, this.w.get('model.norm.weight'), s.rstdF).dx;
      dlast.release();
      for (let li = this.config.text.numHiddenLayers - 1; li >= 0; li--) {
        const x = s.inputs[li];
        let acts = s.acts?.[li];
        if (!acts) {
          const r = layerForward(ctx, li, x, s.rope, { keep: true });
          r.out.release();
          acts = r.acts!;
        }
        const dx = layerBackward(ctx, li, x, acts, d, s.rope);
        releaseActs(acts);
        if (s.acts) s.acts[li] = undefined as unknown as LayerActs;
        d.release();
        d = dx;
      }
      // d inputs_embeds: its image rows are d image_embeds, the tower's upstream gradient
      if (s.vision && s.imgRows) {
        const dimg = gatherRows(d, s.imgRows);
        visionBackward(ctx, s.vision, dimg);
        dimg.release();
      }
      d.release();
    } finally {
      releaseSaved(s);
      flush();
    }
  }

  /** Drop every kept train forward (e.g. after an error between forward and backward). */
  releaseSaved(): void {
    for (const s of this.saved.splice(0)) releaseSaved(s);
  }

  // ---------------------------------------------------------------- debug / parity

  /** The forward's parts, for capture.ts (every intermediate read back: parity and debugging). */
  captureHost(): CaptureHost {
    this.live();
    return { config: this.config, ctx: (lora) => this.ctx(lora), prepare: (seq, ctx, o) => this.prepare(seq, ctx, o), finalNorm: this.w.get('model.norm.weight'), allLogits: (ctx, h) => this.allLogits(ctx, h) };
  }

  /** [L, V] logits of every row of hidden [L, H], assembled on the CPU from row blocks × vocabulary shards. */
  private async allLogits(ctx: TextCtx, hidden: Tensor): Promise<Float32Array> {
    const [L] = hidden.shape, V = this.config.text.vocabSize, per = rowsPerBlock(ctx);
    const out = new Float32Array(L * V);
    for (let r0 = 0; r0 < L; r0 += per) {
      const n = Math.min(per, L - r0);
      const idx = fromData(Int32Array.from({ length: n }, (_, i) => r0 + i), [n], 'i32', 'rows');
      const hs = gatherRows(hidden, idx);
      idx.release();
      const chunks = this.w.lmHead.map((_, i) => logitsChunk(ctx, hs, i));
      const data = await readMany(chunks);
      chunks.forEach((c, i) => {
        const v0 = this.w.lmHead[i].v0, vc = c.shape[1], d = data[i] as Float32Array;
        for (let r = 0; r < n; r++) out.set(d.subarray(r * vc, (r + 1) * vc), (r0 + r) * V + v0);
        c.release();
      });
      hs.release();
    }
    return out;
  }

  // ---------------------------------------------------------------- generation

  /** KV-cache generation for a batch of prompts; returns the new tokens of each (stop id included). */
  async generate(prompts: Prompt[], opts: GenerateOptions): Promise<Int32Array[]> {
    return (await this.generateDetailed(prompts, opts)).ids;
  }

  /** generate(), plus each sampled token's log-prob at the sampling temperature (drawn on the GPU; NaN when greedy). */
  async generateDetailed(prompts: Prompt[], opts: GenerateOptions): Promise<Generated> {
    this.live();
    const lora = (opts.lora ?? true) && this.lora.size > 0;
    const host: GenHost = {
      config: this.config,
      contextLength: this.contextLength,
      ctx: (on) => this.ctx(on && this.lora.size > 0),
      prepare: (p) => this.prepare(p, this.ctx(lora)),
    };
    return generateDetailed(host, prompts, { ...opts, lora });
  }

  // ---------------------------------------------------------------- lifetime

  private live(): void {
    if (this.disposed) throw new Error('the model was disposed');
  }

  private releaseLora(): void {
    for (const m of this.lora.values()) for (const t of [m.A, m.B, m.gA, m.gB]) t?.release();
    this.lora.clear();
    this.adapterConfig = undefined;
  }

  /** Frozen base tensors held as 4-bit NF4 (0: a BF16 base); quantised on load or read from a bitsandbytes 4-bit checkpoint. */
  get nf4Tensors(): number {
    return this.w.all().filter(isNf4).length;
  }

  /** GPU bytes of the weights and the adapter (params + grads). */
  get gpuBytes(): number {
    return this.w.bytes + [...this.lora.values()].reduce((a, m) => a + 2 * (m.A.bindSize + m.B.bindSize), 0);
  }

  /** Free every GPU buffer the model holds. */
  dispose(): void {
    if (this.disposed) return;
    this.releaseSaved();
    this.releaseLora();
    this.clearImageCache();
    this.w.release();
    this.disposed = true;
    flush();
    trimPool();
  }
}

function releaseSaved(s: Saved): void {
  for (const t of [...s.inputs, s.xFinal, s.rstdF, s.rope.cos, s.rope.sin]) t.release();
  for (const a of s.acts ?? []) if (a) releaseActs(a);
  releaseBlocks(s.blocks);
  if (s.vision) releaseVisionSaved(s.vision);
  s.imgRows?.release();
}
