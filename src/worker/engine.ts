// What the Trainer worker does, as a plain class so Node tests can drive it on Dawn: the worker
// (trainer.worker.ts) hands it the browser's IndexedDB, Web Locks and image decoder and exposes it
// through comlink; tests hand it a MemoryKV, an in-memory lock and raw pixels.
//
//   loadModel ─ Qwen2_5_VL.load (memory check first; on failure nothing stays on the GPU)
//   train     ─ run lock → dataset records → TrainExamples → model → Trainer (+ resume from the
//               run's last checkpoint) → step loop, checked between steps for pause / stop;
//               checkpoints every N steps and on pause / stop / end (atomic, checkpoint.ts)
//   generate / exportAdapter / importAdapter / clusterBundle ─ the rest of the studio's needs
import { zipSync } from 'fflate';
import { GpuError, gpu, hasGpu } from '../gpu/device.ts';
import { fromData, readMany, write } from '../gpu/tensor.ts';
import { matmul } from '../ops/matmul.ts';
import type { Qwen2_5_VL } from '../model/qwen2_5_vl.ts';
import type { ModelSource } from '../model/sources/source.ts';
import type { QwenVLConfig } from '../model/config.ts';
import { parseAdapterConfig, targetedModules, type LoraConfig } from '../model/lora.ts';
import { GENERATION_CONFIG, readGenerationConfig, type GenerationDefaults } from '../model/generationConfig.ts';
import { expectedWeights } from '../model/weights.ts';
import { TrainingFault } from '../train/trainer.ts';
import { deleteRun, loadLatestCheckpoint, loadNewestValidCheckpoint, type KV } from '../train/checkpoint.ts';
import { clusterBundle } from '../export/cluster.ts';
import { checkpointAdapterFiles, modelAdapterFiles } from '../export/peft.ts';
import { adapterFromPeftFiles, exportMerged, type MergedSink } from '../export/merged.ts';
import { fullPrecisionBaseId } from '../model/quant.ts';
import { loadAdapterFiles } from '../model/adapterFiles.ts';
import { defaultTokenizerJson, type QwenTokenizer } from '../data/tokenizer.ts';
import { DEFAULT_IMAGE_CONFIG, preprocessImage, smartResize, stackImages, type RawImage } from '../data/image.ts';
import { buildPrompt, type ChatMessage } from '../data/template.ts';
import { IncrementalDecoder } from '../data/streamDecode.ts';
import { boxToOriginal, parseGroundings } from '../data/bbox.ts';
import { exportDataset } from '../data/formats/export.ts';
import type { TaskRecord } from '../data/formats/records.ts';
import type { DatasetMeta, ImageRecord } from '../data/formats/types.ts';
import { DEFAULT_CONFIG, mergeConfig, type DeepPartial, type TrainConfig } from '../config/config.ts';
import { formatErrors, validate } from '../config/validate.ts';
import {
  baseModelId, loadModel, loraConfigOf, quantizeOptions, readModelConfig, readTokenizer, sourceOf, specKey, specName, specOf, storableSpec, type ModelHost,
} from '../session/model.ts';
import { DEFAULT_PLAN, ExampleProblems, prepareExamples, recordWhere, sampledTokens, takesRecord, type ExampleProblem, type ExampleSource, type Plan } from '../session/examples.ts';
import { memoryReport, stepFlops } from '../session/estimate.ts';
import { Run } from '../session/run.ts';
import { imageCount, keepHeldOut, splitByImage } from '../session/split.ts';
import {
  RUN_LOCKED,
  type AdapterChoice, type AdapterFile, type AdapterInfo, type EstimateResult, type GenerateOptions, type GenerateResult, type GenerateStream,
  type LoadProgress, type LoraSettings, type ModelInfo, type ModelSpec, type RunState, type RunSummary,
  type TrainEvent, type TrainRequest, type MergedRequest, type MergedProgress, type MergedResult,
  type PredictSplitEvent, type PredictSplitRequest, type PredictSplitResult, type SplitAnswer, type SplitQuestion,
} from './api.ts';
import { groundingReference, predictGrounding, splitQuestions, type PredictedQuestion, type QuestionResult } from '../session/eval.ts';
import { resizedSize } from '../session/checks.ts';
import type { TrainExample } from '../train/trainer.ts';

/** What the engine needs from its host (the worker, or a test). */
export interface EngineDeps {
  kv(): Promise<KV>;
  /** pixels of an image Blob (the worker: createImageBitmap + OffscreenCanvas) */
  decodeImage(blob: Blob): Promise<RawImage>;
  /** a stored dataset: its meta and its images with their Blobs and records (data/datasetSamples.ts) */
  loadSamples(datasetId: string): Promise<{ dataset: DatasetMeta; samples: { imageId: string; name: string; blob: Blob; image: ImageRecord; records: TaskRecord[] }[] }>;
  /** take a named exclusive lock if free: its release function, or null when another holder has it (Web Locks) */
  lock(name: string): Promise<(() => void) | null>;
  /** the built-in tokenizer (tiny model; a folder without tokenizer.json) */
  defaultTokenizer?(): Promise<QwenTokenizer>;
  /** a model folder on disk ({ source: 'folder' } specs: Node only, e.g. tests) */
  folder?(path: string): Promise<ModelSource>;
}

/** The run's facts kept next to its checkpoints, so a reload can resume it. */
interface RunMeta {
  runId: string;
  config: TrainConfig;
  /** the model without File objects */
  model: ModelSpec;
  datasetId?: string;
  /** the adapter config the run trains (from the settings, or from an imported adapter) */
  lora: LoraConfig;
  baseModel: string;
  createdAt: number;
  /** the held-out images (session/split.ts image keys) the run started with: a resume keeps them */
  evalImages?: string[];
  /** the step of the last evaluation the page was sent: a resume that lands on an eval step it lacks evaluates again */
  lastEvalStep?: number;
}

const metaKey = (runId: string) => `run/${runId}/meta`;

const userTurn = (text: string, images: number): ChatMessage => ({
  role: 'user',
  content: [...Array.from({ length: images }, () => ({ type: 'image' as const })), { type: 'text' as const, text }],
});

function isDeviceLoss(e: unknown): boolean {
  return !hasGpu() || (e instanceof GpuError && /lost/i.test(e.message)) || /device (was )?lost|Device is lost|destroyed/i.test(String((e as Error)?.message ?? e));
}

const TERMINAL: RunState[] = ['stopped', 'done', 'failed', 'device-lost'];

interface Active {
  runId: string;
  state: RunState;
  control: 'run' | 'pause' | 'stop';
  /** wakes the loop while paused */
  wake?: () => void;
  setState(state: RunState, message?: string, step?: number): void;
  waiters: { states: RunState[]; resolve: () => void }[];
}

interface Loaded {
  model: Qwen2_5_VL;
  tokenizer: QwenTokenizer;
  info: ModelInfo;
  device: GPUDevice;
  spec: ModelSpec;
  /** whose weights the adapter holds */
  adapter: { label: string; runId?: string; step?: number; lora: LoraConfig } | null;
}

export class Engine {
  private loaded?: Loaded;
  private active?: Active;
  /** seconds per optimizer step seen here, per model key and method (for the time estimate) */
  private measured = new Map<string, { secPerStep: number; tokensPerStep: number }>();
  private matmulRate?: number;
  private configs = new Map<string, QwenVLConfig>();
  private tokenizers = new Map<string, Promise<QwenTokenizer>>();
  private generationConfigs = new Map<string, GenerationDefaults>();

  private host: ModelHost;

  constructor(private deps: EngineDeps) {
    this.host = { defaultTokenizer: deps.defaultTokenizer, folder: deps.folder };
  }

  // ---- models --------------------------------------------------------------------------------

  private alive(): Loaded | undefined {
    const l = this.loaded;
    if (l && hasGpu() && gpu().device === l.device) return l;
    if (l) this.dropModel();
    return undefined;
  }

  private dropModel(): void {
    const l = this.loaded;
    this.loaded = undefined;
    if (!l) return;
    try {
      l.model.dispose();
    } catch {
      /* its device is gone: so are its buffers */
    }
  }

  private async modelConfig(spec: ModelSpec, source?: ModelSource): Promise<QwenVLConfig> {
    const key = specKey(spec);
    const hit = this.configs.get(key);
    if (hit) return hit;
    const cfg = await readModelConfig(source ?? (await sourceOf(spec, this.host)));
    this.configs.set(key, cfg);
    return cfg;
  }

  private tokenizerFor(spec: ModelSpec, source: ModelSource): Promise<QwenTokenizer> {
    const key = specKey(spec);
    let t = this.tokenizers.get(key);
    if (!t) {
      t = readTokenizer(spec, source, this.host);
      t.catch(() => this.tokenizers.delete(key));
      this.tokenizers.set(key, t);
    }
    return t;
  }

  private infoOf(spec: ModelSpec, sourceId: string, model: Qwen2_5_VL, lora: LoraConfig | null, plan: Plan, loadMs: number, quant: { quantize?: 'nf4'; quantizeVision?: boolean } = {}): ModelInfo {
    const c = model.config;
    let params = 0;
    for (const shape of expectedWeights(c).values()) params += shape.reduce((a, b) => a * b, 1);
    const mods = lora ? targetedModules(c, lora) : [];
    return {
      key: specKey(spec), sourceId, name: specName(spec),
      config: {
        layers: c.text.numHiddenLayers, hidden: c.text.hiddenSize, heads: c.text.numAttentionHeads, kvHeads: c.text.numKeyValueHeads,
        intermediate: c.text.intermediateSize, vocab: c.text.vocabSize, visionDepth: c.vision.depth, visionHidden: c.vision.hiddenSize, tiedEmbeddings: c.text.tieWordEmbeddings,
      },
      params,
      lora: lora ? { params: mods.reduce((a, m) => a + m.r * (m.inFeatures + m.outFeatures), 0), modules: mods.length, r: lora.r, alpha: lora.loraAlpha, scale: lora.useRslora ? lora.loraAlpha / Math.sqrt(lora.r) : lora.loraAlpha / lora.r } : null,
      memory: memoryReport(c, lora ?? loraConfigOf({ r: 16, alpha: 32, dropout: 0, targetModules: [], useRslora: false }), plan, quant),
      gpuBytes: model.gpuBytes,
      nf4Tensors: model.nf4Tensors,
      warnings: [...model.warnings],
      loadMs,
    };
  }

  /**
   * The model of `spec` with a fresh adapter `lora` (null: keep the adapter as it is). Reuses the
   * loaded weights when the source is the same.
   */
  async loadModel(
    spec: ModelSpec, lora: LoraSettings | LoraConfig | null, onProgress?: (p: LoadProgress) => void, plan: Plan = DEFAULT_PLAN, loraSeed = 0,
    quant: { quantize?: 'nf4'; quantizeVision?: boolean } = {},
  ): Promise<ModelInfo> {
    const cfg = lora === null ? null : 'loraAlpha' in lora ? lora : loraConfigOf(lora, baseModelId(spec));
    const key = modelKey(spec, quant);
    const cur = this.alive();
    if (cur && cur.info.key === key) {
      if (cfg) {
        cur.model.initAdapter(cfg, loraSeed);
        cur.adapter = { label: 'fresh', lora: cfg };
      }
      cur.info = { ...this.infoOf(spec, cur.info.sourceId, cur.model, cur.adapter?.lora ?? null, plan, cur.info.loadMs, quant), key };
      return cur.info;
    }
    this.dropModel(); // one model on the GPU at a time
    const source = await sourceOf(spec, this.host);
    const config = await this.modelConfig(spec, source);
    // Qwen2_5_VL.load refuses, with the numbers, what does not fit, and frees everything if it fails.
    const loaded = await loadModel(spec, this.host, { lora: cfg ?? undefined, loraSeed, plan, onProgress, config, tokenizer: () => this.tokenizerFor(spec, source), ...quant });
    const info = { ...this.infoOf(spec, loaded.sourceId, loaded.model, cfg, plan, loaded.loadMs, quant), key };
    this.loaded = { model: loaded.model, tokenizer: loaded.tokenizer, info, device: gpu().device, spec: storableSpec(spec), adapter: cfg ? { label: 'fresh', lora: cfg } : null };
    if (spec.source === 'local') this.loaded.spec = spec; // keep the Files for a reload of the same folder in this session
    return info;
  }

  modelInfo(): ModelInfo | null {
    return this.alive()?.info ?? null;
  }

  /**
   * The model's generation_config.json, checked field by field (model/generationConfig.ts): what
   * transformers' generate() starts from, so the Playground's defaults and generate()'s stop ids
   * too. Never throws: an unreadable file is a warning, and transformers' defaults apply.
   */
  async generationConfig(spec: ModelSpec): Promise<GenerationDefaults> {
    const key = specKey(spec);
    const hit = this.generationConfigs.get(key);
    if (hit) return hit;
    let g: GenerationDefaults;
    try {
      const source = await sourceOf(spec, this.host);
      const vocab = await this.modelConfig(spec, source).then((c) => c.text.vocabSize, () => undefined);
      g = await readGenerationConfig(source, vocab);
    } catch (e) {
      g = { found: false, warnings: [`${GENERATION_CONFIG} could not be read (${(e as Error).message}): transformers' defaults are used.`], notApplied: [] };
    }
    if (g.found || !g.warnings.length) this.generationConfigs.set(key, g); // an unreachable hub is asked again next time
    return g;
  }

  // ---- estimate ------------------------------------------------------------------------------

  async estimate(c: TrainConfig, datasetId?: string, files?: File[]): Promise<EstimateResult> {
    const spec = specOf(c, files);
    const notes: string[] = [];
    const lora = loraConfigOf(c.lora, baseModelId(spec));
    let config: QwenVLConfig;
    try {
      config = this.alive()?.info.key === modelKey(spec, quantizeOptions(c)) ? this.loaded!.model.config : await this.modelConfig(spec);
    } catch (e) {
      throw new Error(`Cannot read the model's config.json for an estimate: ${(e as Error).message}`);
    }
    let plan = DEFAULT_PLAN;
    let examples: number | undefined;
    let held: Pick<EstimateResult, 'evalExamples' | 'evalImages' | 'datasetImages'> = {};
    if (datasetId) {
      try {
        const d = await this.datasetPlan(datasetId, c);
        plan = d.plan;
        examples = d.examples;
        held = d.held;
      } catch (e) {
        notes.push((e as Error).message);
      }
    } else notes.push(`No dataset chosen: sized for one ${DEFAULT_PLAN.images[0].width}×${DEFAULT_PLAN.images[0].height} image and ${DEFAULT_PLAN.textTokens} text tokens.`);
    const memory = memoryReport(config, lora, plan, quantizeOptions(c));
    // the config's rules that need the dataset (batch and steps against the examples trained on, the split against its images)
    if (examples !== undefined) for (const e of validate(c, { datasetSize: examples, datasetImages: held.datasetImages, modelSource: false })) notes.push(`${e.path || 'settings'}: ${e.message}`);
    const perStep = Math.max(1, c.optim.batchSize) * Math.max(1, c.optim.gradAccumSteps);
    const totalSteps = c.optim.maxSteps > 0 ? c.optim.maxSteps : examples ? Math.ceil((c.optim.numEpochs * examples) / perStep) : undefined;
    const flopsPerStep = stepFlops(config, c, plan) * perStep;
    let secondsPerStep: number | undefined;
    let timeBasis: EstimateResult['timeBasis'];
    const seen = this.measured.get(`${specKey(spec)}|${c.method}`);
    const tokens = plan.textTokens + memory.imageTokens;
    if (seen) {
      secondsPerStep = (seen.secPerStep * (tokens * perStep)) / Math.max(1, seen.tokensPerStep);
      timeBasis = 'measured';
    } else if (hasGpu() && !this.active) {
      secondsPerStep = flopsPerStep / (await this.matmulFlops()) / 0.5; // kernels other than matmul (attention, norms, readbacks) take about as long again
      timeBasis = 'flops';
    }
    const loraParams = targetedModules(config, lora).reduce((a, m) => a + m.r * (m.inFeatures + m.outFeatures), 0);
    return { memory, loraParams, examples, ...held, totalSteps, flopsPerStep, secondsPerStep, totalSeconds: secondsPerStep && totalSteps ? secondsPerStep * totalSteps : undefined, timeBasis, notes };
  }

  /**
   * The dataset's size for an estimate: the examples a new run trains on (the records the method
   * takes, less the held-out split, made as examples() makes it: by image name, the config's eval
   * section and seed) and the largest image and text among all of them.
   */
  private async datasetPlan(datasetId: string, c: TrainConfig): Promise<{ plan: Plan; examples: number; held: Pick<EstimateResult, 'evalExamples' | 'evalImages' | 'datasetImages'> }> {
    const { dataset, samples } = await this.deps.loadSamples(datasetId);
    let biggest = { height: 448, width: 448 }, textChars = 0;
    const taken: ExampleSource[] = [];
    for (const s of samples) {
      for (const r of s.records) {
        if (!takesRecord(r, c.method)) continue;
        taken.push({ where: s.name, record: r, images: [{ name: s.name }] });
        const t = r.kind === 'sft' ? r.question + r.answer : r.kind === 'preference' ? r.prompt + r.chosen + r.rejected : r.prompt + r.reference;
        textChars = Math.max(textChars, t.length);
      }
      const [h, w] = smartResize(s.image.height, s.image.width, 28, dataset.minPixels, dataset.maxPixels);
      if (h * w > biggest.height * biggest.width || s === samples[0]) biggest = { height: h, width: w };
    }
    const datasetImages = imageCount(taken);
    let held: Pick<EstimateResult, 'evalExamples' | 'evalImages' | 'datasetImages'> = { datasetImages };
    let examples = taken.length;
    try {
      const split = splitByImage(taken, c.eval, c.optim.seed);
      if (split.eval.length) {
        examples = split.train.length;
        held = { datasetImages, evalExamples: split.eval.length, evalImages: split.evalImages.length };
      }
    } catch {
      /* a split holding out every image: validate() names it in the notes */
    }
    // ~3.5 characters per token for English and JSON, plus the chat template's ~25 tokens
    return { plan: { images: [biggest], textTokens: 25 + Math.ceil(textChars / 3.5) }, examples, held };
  }

  /** f32 matmul rate of this device (FLOP/s), measured once on a model-sized product. */
  private async matmulFlops(): Promise<number> {
    if (this.matmulRate) return this.matmulRate;
    const [M, N, K] = [128, 256, 256];
    const x = fromData(new Float32Array(M * K).fill(0.01), [M, K], 'f32', 'calib.x');
    const w = fromData(new Float32Array(N * K).fill(0.02), [N, K], 'f32', 'calib.W');
    try {
      await readMany([matmul(x, w, { name: 'calib.warm' })]).then(() => undefined); // compile
      const reps = 4, t0 = performance.now();
      const ys = Array.from({ length: reps }, (_, i) => matmul(x, w, { name: `calib.y${i}` }));
      await readMany([ys[reps - 1]]);
      for (const y of ys) y.release();
      this.matmulRate = (2 * M * N * K * reps) / Math.max(1e-4, (performance.now() - t0) / 1000);
    } finally {
      x.release();
      w.release();
    }
    return this.matmulRate;
  }

  // ---- training ------------------------------------------------------------------------------

  async train(req: TrainRequest, onEvent: (e: TrainEvent) => void): Promise<RunSummary> {
    if (this.active) throw new Error(`A run (${this.active.runId}) is already training in this tab: pause or stop it first.`);
    this.refuseWhilePredicting('train');
    const release = await this.deps.lock(`patchwork-run-${req.runId}`);
    if (!release) throw new Error(`The run ${req.runId} ${RUN_LOCKED}: stop it there, or close that tab, to continue it here.`);
    const emit = (e: TrainEvent) => {
      try {
        onEvent(e);
      } catch {
        /* the page went away */
      }
    };
    const active: Active = {
      runId: req.runId, state: 'loading', control: 'run', waiters: [],
      setState(state, message, step) {
        active.state = state;
        emit({ type: 'status', status: state, message, step });
        active.waiters = active.waiters.filter((w) => (w.states.includes(state) ? (w.resolve(), false) : true));
      },
    };
    const setState = active.setState;
    this.active = active;
    let run: Run | undefined;
    let checkpointStep: number | null = null;
    let status: RunSummary['status'] = 'stopped';
    let message: string | undefined;
    let invalidRecords: number | undefined;
    try {
      setState('loading');
      // settings saved by an older build (a run's meta, a persisted form) lack newer fields: the defaults fill them
      const c = mergeConfig(DEFAULT_CONFIG, req.config as DeepPartial<TrainConfig>);
      const spec = req.model ?? specOf(c);
      const quant = quantizeOptions(c);
      const bad = validate(c, { modelSource: false });
      if (bad.length) throw new Error(formatErrors(bad, 'The Train settings'));
      const kv = await this.deps.kv();
      const prev = (await kv.get<RunMeta>(metaKey(req.runId))) ?? undefined;
      // data first: every record is checked (with the model's tokenizer) before the weights download
      const source = await sourceOf(spec, this.host);
      const tokenizer = await this.tokenizerFor(spec, source);
      const data = await this.examples(req, tokenizer, (p) => emit({ type: 'progress', progress: p }), prev?.evalImages);
      emit({
        type: 'data', examples: data.examples.length, skipped: data.skipped, minPixels: data.minPixels, maxPixels: data.maxPixels,
        ...(data.evalExamples.length ? { evalExamples: data.evalExamples.length, evalImages: data.evalImages, datasetImages: data.datasetImages } : {}),
        ...(data.evalImageIds.length ? { evalImageIds: data.evalImageIds } : {}),
      });
      for (const w of data.warnings) emit({ type: 'warning', message: w });
      const sized = validate(c, { datasetSize: data.examples.length, datasetImages: data.datasetImages, modelSource: false });
      if (sized.length) throw new Error(formatErrors(sized, `The Train settings with ${data.examples.length} examples`));
      if (this.stopRequested(active)) throw new StopBeforeStart();

      const ck = await loadNewestValidCheckpoint(kv, req.runId);
      let lora: LoraConfig;
      if (req.startFrom === 'imported' && !ck) {
        const cur = this.alive();
        if (!cur?.adapter || !cur.adapter.label.startsWith('imported') || cur.info.key !== modelKey(spec, quant)) throw new Error('No imported adapter on this model to continue from: import one on the Export screen first (with the same base model).');
        lora = cur.adapter.lora;
        await this.loadModel(spec, null, (p) => emit({ type: 'progress', progress: p }), data.plan, 0, quant);
      } else {
        lora = prev?.lora ?? loraConfigOf(c.lora, baseModelId(spec));
        await this.loadModel(spec, lora, (p) => emit({ type: 'progress', progress: p }), data.plan, c.optim.seed, quant);
      }
      const l = this.loaded!;
      emit({ type: 'model', info: l.info });
      for (const w of l.info.warnings) emit({ type: 'warning', message: `${w}.` });
      if (!l.info.memory.ok) emit({ type: 'warning', message: l.info.memory.message });
      const meta: RunMeta = {
        runId: req.runId, config: c, model: storableSpec(spec), lora, baseModel: baseModelId(spec), createdAt: prev?.createdAt ?? Date.now(),
        ...('datasetId' in req.data ? { datasetId: req.data.datasetId } : {}),
        ...(data.evalImages.length ? { evalImages: data.evalImages } : {}),
        ...(prev?.lastEvalStep !== undefined && ck ? { lastEvalStep: prev.lastEvalStep } : {}),
      };
      await kv.set(metaKey(req.runId), meta);

      const r = (run = new Run({
        runId: req.runId, config: c, model: l.model, tokenizer: l.tokenizer, examples: data.examples, kv, pixels: data, saveEvery: req.checkpointEvery,
        ...(data.evalExamples.length ? { evalExamples: data.evalExamples } : {}),
      }));
      // the held-out split after a step (every eval.evalSteps and at the end): progress first, so the
      // page can say why no step comes, then the metrics; the meta remembers the step, for a resume.
      // Stop cuts an evaluation short between examples (a pause waits for it): the run then ends
      // 'stopped', and Resume evaluates that step again before the next.
      let evalCut = false;
      const evaluate = async () => {
        const at = r.step;
        emit({ type: 'eval-progress', step: at, done: 0, total: data.evalExamples.length });
        try {
          const res = await r.evaluate((done, total) => {
            if (active.control === 'stop') throw new EvalStopped();
            emit({ type: 'eval-progress', step: at, done, total });
          });
          emit({ type: 'eval', step: res.step, metrics: res.metrics });
          meta.lastEvalStep = res.step;
          await kv.set(metaKey(req.runId), meta);
        } catch (e) {
          if (!(e instanceof EvalStopped)) throw e;
          evalCut = true;
        }
      };
      r.onCheckpoint = (step) => {
        checkpointStep = step;
        l.adapter = { label: req.runId, runId: req.runId, step, lora };
        emit({ type: 'checkpoint', step });
      };
      // the newest valid checkpoint (a damaged newer one is skipped, and the message names both)
      const resumed = ck ? await r.resume() : null;
      if (resumed?.message) emit({ type: 'warning', message: resumed.message });
      checkpointStep = resumed?.step ?? null;
      emit({ type: 'resumed', step: resumed?.step ?? 0 });
      l.adapter = { label: req.runId, runId: req.runId, step: r.step, lora };
      if (this.stopRequested(active)) throw new StopBeforeStart();
      setState('running', undefined, r.step);
      // resumed on an eval step whose evaluation never reached the page (the tab closed during it)
      if (resumed && r.evalDue && (meta.lastEvalStep ?? 0) < r.step) await evaluate();
      const mkey = `${l.info.key}|${c.method}`;
      // (read through a function: the flags change from pause() / stop() while this loop awaits)
      const control = () => active.control;
      while (true) {
        if (control() === 'stop') break;
        if (control() === 'pause') {
          await r.save();
          setState('paused', undefined, r.step);
          await new Promise<void>((res) => (active.wake = res));
          active.wake = undefined;
          if (control() !== 'run') continue; // stop (or pause again) while paused
          setState('running', undefined, r.step);
        }
        if (r.done) break;
        const m = await r.trainStep();
        const metrics: Record<string, number> = {};
        for (const [k, v] of Object.entries(m)) if (typeof v === 'number') metrics[k] = v;
        emit({ type: 'step', step: m.step, totalSteps: r.totalSteps, metrics });
        if (m.samples_per_s > 0) {
          const sec = r.trainer.perStep / m.samples_per_s;
          this.measured.set(mkey, { secPerStep: sec, tokensPerStep: m.tokens_per_s * sec });
        }
        if (r.evalDue) await evaluate();
      }
      await r.save();
      status = r.done && !evalCut ? 'done' : 'stopped';
    } catch (e) {
      // A destroyed device fails the next call before its `lost` promise settles: give it a moment.
      const dev = this.loaded?.device;
      if (dev && !(e instanceof TrainingFault) && !(e instanceof StopBeforeStart)) await Promise.race([dev.lost, new Promise((r) => setTimeout(r, 300))]);
      if (e instanceof StopBeforeStart) status = 'stopped';
      else if (e instanceof TrainingFault) {
        status = 'failed';
        // checkpoints after the fault's last good step are not trusted: Resume must not pick them
        if (run) checkpointStep = await run.rollback(e).catch(() => checkpointStep);
        message = `${e.message}${checkpointStep !== null ? ` (last checkpoint: step ${checkpointStep})` : ''}`;
      } else if (isDeviceLoss(e)) {
        status = 'device-lost';
        const at = run ? ` at step ${run.step + 1}` : '';
        message = `The GPU device was lost${at} (${gpuLostReason() ?? (e as Error).message}). Reconnect the GPU, then Resume continues from ${checkpointStep !== null ? `the checkpoint of step ${checkpointStep}` : 'the start (no checkpoint yet)'}.`;
        this.dropModel();
      } else {
        status = 'failed';
        message = (e as Error)?.message ?? String(e);
        if (e instanceof ExampleProblems) invalidRecords = e.problems.length;
      }
    } finally {
      try {
        run?.dispose();
      } catch {
        /* lost device */
      }
      this.active = undefined;
      release();
    }
    setState(status, message, run?.step);
    return { runId: req.runId, status, step: run?.step ?? checkpointStep ?? 0, totalSteps: run?.totalSteps ?? 0, checkpointStep, message, ...(invalidRecords ? { invalidRecords } : {}) };
  }

  /**
   * The request's records, decoded and checked in full (session/examples.ts), with the smart_resize
   * bounds the records' boxes assume. Problems refuse the run, naming every record, unless
   * req.skipInvalid (then the named records are left out, each reported as a warning).
   */
  private async examples(req: TrainRequest, tokenizer: QwenTokenizer, onProgress: (p: LoadProgress) => void, heldBefore?: string[]) {
    const c = req.config, method = c.method;
    let minPixels: number, maxPixels: number, name = 'the examples';
    const sources: ExampleSource[] = [];
    /** a stored dataset's image ids by image key (the image's name: images of one name are one image to the split) */
    const idsOf = new Map<string, string[]>();
    const decode = async (blob: Blob, label: string) => {
      try {
        return { name: label, image: await this.deps.decodeImage(blob) };
      } catch (e) {
        return { name: label, error: (e as Error).message };
      }
    };
    if ('datasetId' in req.data) {
      const { dataset, samples } = await this.deps.loadSamples(req.data.datasetId);
      name = `"${dataset.name}"`;
      // Grounding answers are in the resized frame of the dataset's bounds: train with exactly those
      // (the 'data' event tells the page which bounds were used).
      minPixels = dataset.minPixels;
      maxPixels = dataset.maxPixels;
      for (const [i, s] of samples.entries()) {
        onProgress({ phase: 'data', loaded: i, total: samples.length, label: 'decoding images' });
        const wanted = s.records.filter((r) => takesRecord(r, method));
        const images = wanted.length ? [await decode(s.blob, s.name)] : [];
        if (wanted.length) idsOf.set(s.name, [...(idsOf.get(s.name) ?? []), s.imageId]);
        s.records.forEach((r, k) => sources.push({ where: recordWhere(s.name, k, s.records.length), record: r, images }));
      }
    } else {
      minPixels = req.data.minPixels ?? c.data.minPixels;
      maxPixels = req.data.maxPixels ?? c.data.maxPixels;
      for (const [i, e] of req.data.examples.entries()) {
        onProgress({ phase: 'data', loaded: i, total: req.data.examples.length, label: 'decoding images' });
        sources.push({ where: `example ${i + 1}`, record: e.record, images: takesRecord(e.record, method) ? await Promise.all(e.images.map((b, k) => decode(b, `example ${i + 1} image ${k + 1}`))) : [] });
      }
    }
    onProgress({ phase: 'data', loaded: sources.length, total: sources.length, label: 'checking examples' });
    const maxNewTokens = sampledTokens(c);
    const skipHint = 'choose "Skip them and train on the rest"';
    const opts = { method, data: { minPixels, maxPixels, maxLength: c.data.maxLength }, maxNewTokens, tokenizer, skipHint };
    const warnings: string[] = [];
    // The held-out split, by image among the records the method takes (as the CLI's --eval-split),
    // BEFORE the checks: no question about a held-out image is trained on. An impossible split is
    // refused with the numbers.
    const taken = sources.filter((s) => takesRecord(s.record, method));
    const datasetImages = imageCount(taken);
    const splitErrors = validate(c, { datasetImages, modelSource: false }).filter((e) => e.path === 'eval.evalSplit');
    if (splitErrors.length) throw new Error(formatErrors(splitErrors, `The Train settings with ${name}`));
    const split = keepHeldOut(splitByImage(taken, c.eval, c.optim.seed), taken, heldBefore, warnings);
    let p: ReturnType<typeof prepareExamples>;
    let evalP: ReturnType<typeof prepareExamples> | undefined;
    if (!split.eval.length) p = prepareExamples(sources, { ...opts, skipInvalid: req.skipInvalid, name });
    else {
      // both sides checked before either refuses, so every bad record is named at once
      const problems: ExampleProblem[] = [];
      const side = (src: ExampleSource[], what: string) => {
        try {
          const got = prepareExamples(src, { ...opts, skipInvalid: true, name: what });
          problems.push(...got.problems);
          return got;
        } catch (e) {
          if (!(e instanceof ExampleProblems)) throw e;
          problems.push(...e.problems);
          return undefined;
        }
      };
      const tp = side([...split.train, ...sources.filter((s) => !takesRecord(s.record, method))], name);
      evalP = side(split.eval, `the eval split of ${name}`);
      if ((problems.length && !req.skipInvalid) || !tp || !evalP) throw new ExampleProblems(problems, taken.length, skipHint);
      p = tp;
    }
    warnings.push(...p.problems.map((x) => `Left out ${x.where}: ${x.message}.`), ...(evalP?.problems ?? []).map((x) => `Left out of the eval split ${x.where}: ${x.message}.`));
    if (p.otherKind) warnings.push(`${p.otherKind} record${p.otherKind > 1 ? 's' : ''} of another kind than ${method.toUpperCase()} takes ${p.otherKind > 1 ? 'were' : 'was'} left out.`);
    return {
      examples: p.examples, evalExamples: evalP?.examples ?? [], evalImages: evalP ? split.evalImages : [], datasetImages,
      evalImageIds: evalP ? split.evalImages.flatMap((k) => idsOf.get(k) ?? []) : [],
      skipped: p.otherKind + p.problems.length + (evalP?.problems.length ?? 0), minPixels, maxPixels, warnings, plan: p.plan.images.length ? p.plan : { ...DEFAULT_PLAN, textTokens: p.plan.textTokens },
    };
  }

  private stopRequested(a: Active): boolean {
    return a.control === 'stop';
  }

  private async waitFor(states: RunState[]): Promise<void> {
    const a = this.active;
    if (!a || states.includes(a.state)) return;
    await new Promise<void>((resolve) => a.waiters.push({ states, resolve }));
  }

  async pause(): Promise<void> {
    const a = this.active;
    if (!a) throw new Error('No run is training.');
    if (a.state === 'paused' || a.control === 'stop') return;
    a.control = 'pause';
    if (a.state === 'running') a.setState('pausing', undefined);
    await this.waitFor(['paused', ...TERMINAL]);
  }

  async resume(): Promise<void> {
    const a = this.active;
    if (!a) throw new Error('No run is paused.');
    if (a.control !== 'pause') return;
    this.refuseWhilePredicting('resume');
    a.control = 'run';
    if (a.state === 'pausing') return a.setState('running'); // the loop had not paused yet
    a.wake?.();
    await this.waitFor(['running', ...TERMINAL]);
  }

  async stop(): Promise<void> {
    const a = this.active;
    if (!a) return;
    a.control = 'stop';
    if (a.state === 'running' || a.state === 'pausing') a.setState('stopping');
    a.wake?.();
    await this.waitFor(TERMINAL);
  }

  /** Continue a dataset run from its last checkpoint (a fresh start of the same run when it has none). */
  async resumeRun(runId: string, onEvent: (e: TrainEvent) => void, files?: File[]): Promise<RunSummary> {
    const kv = await this.deps.kv();
    const meta = await kv.get<RunMeta>(metaKey(runId));
    if (!meta) throw new Error(`Run ${runId} has no saved settings in this browser: it never reached the training loop. Start a new run instead.`);
    if (!meta.datasetId) throw new Error(`Run ${runId} trained on examples passed by the caller, not a stored dataset: call train() with them again.`);
    const model = meta.model.source === 'local' ? { ...meta.model, files } : meta.model;
    return this.train({ runId, config: meta.config, model, data: { datasetId: meta.datasetId } }, onEvent);
  }

  async deleteRun(runId: string): Promise<void> {
    if (this.active?.runId === runId) throw new Error('This run is training: stop it first.');
    const kv = await this.deps.kv();
    await deleteRun(kv, runId);
    await kv.del(metaKey(runId));
  }

  async checkpointStep(runId: string): Promise<number | null> {
    const ck = await loadLatestCheckpoint(await this.deps.kv(), runId).catch(() => undefined);
    return ck ? ck.step : null;
  }

  // ---- adapters and inference ------------------------------------------------------------------

  /** Refuse work that would race the training loop; `pausedOk`: work that leaves the adapter alone may run while paused. */
  private idle(what: string, pausedOk = false): void {
    const a = this.active;
    if (a && !(pausedOk && a.state === 'paused')) throw new Error(`Cannot ${what} while a run is ${a.state === 'paused' ? 'paused (stop it first)' : 'training: pause or stop it first'}.`);
  }

  /**
   * Refuse what would change the model under the predictions or answers in flight (training,
   * resuming it, predictions over a split): one check, naming what runs and what to do.
   */
  private refuseWhilePredicting(what: string): void {
    if (this.predicting) throw new Error('Predictions over a split are running in this tab: cancel them (or wait for them) first.');
    const g = this.generating[0];
    if (g) throw new Error(`An answer is being generated in this tab (${g}): stop it first${g === 'Playground' ? ' (Stop on the Playground screen)' : ''} or wait for it to end, then ${what}.`);
  }

  async useAdapter(choice: AdapterChoice): Promise<AdapterInfo> {
    this.idle('switch adapters', choice.kind === 'current' || choice.runId === this.active?.runId);
    if (choice.kind === 'run') this.refuseWhilePredicting('switch adapters'); // not under answers in flight
    if (choice.kind === 'current') {
      const l = this.alive();
      if (!l) throw new Error('No model is loaded: train a run or import an adapter first.');
      return this.adapterInfo(l);
    }
    const kv = await this.deps.kv();
    const meta = await kv.get<RunMeta>(metaKey(choice.runId));
    const ck = await loadLatestCheckpoint(kv, choice.runId);
    if (!meta || !ck) throw new Error(`Run ${choice.runId} has no checkpoint in this browser yet.`);
    let l = this.alive();
    if (this.active?.runId === choice.runId && l) return this.adapterInfo(l); // paused mid-run: its live adapter
    if (l?.adapter?.runId === choice.runId && l.adapter.step === ck.step) return this.adapterInfo(l);
    // a local folder's Files are only known for the folder loaded in this session
    const want = meta.model.source === 'local' && l?.spec.source === 'local' && l.spec.name === meta.model.name ? l.spec : meta.model;
    const quant = meta.config ? quantizeOptions(meta.config) : {}; // the base the run trained on (NF4 or BF16)
    if (!l || l.info.key !== modelKey(want, quant)) {
      await this.loadModel(want, meta.lora, undefined, DEFAULT_PLAN, 0, quant);
      l = this.loaded!;
    } else l.model.initAdapter(meta.lora);
    for (const p of l.model.loraParams()) {
      const t = ck.lora[p.name];
      if (!t || t.data.length !== p.param.numel) throw new Error(`Run ${choice.runId}: its checkpoint does not match the adapter (${p.name}).`);
      write(p.param, t.data);
    }
    l.adapter = { label: choice.runId, runId: choice.runId, step: ck.step, lora: meta.lora };
    return this.adapterInfo(l);
  }

  private adapterInfo(l: Loaded): AdapterInfo {
    const a = l.adapter;
    if (!a) return { label: 'none', modules: 0, params: 0, r: 0 };
    const mods = targetedModules(l.model.config, a.lora);
    return { label: a.label, runId: a.runId, step: a.step, modules: mods.length, params: mods.reduce((s, m) => s + m.r * (m.inFeatures + m.outFeatures), 0), r: a.lora.r };
  }

  /**
   * One answer for images + prompt, greedy unless opts.temperature > 0 (then seeded sampling with
   * top-k / top-p). `onToken` (optional, a comlink proxy from the page) streams it: after each token,
   * the settled text so far and the boxes in it; cancelGenerate() stops such a streamed answer.
   */
  async generate(images: Blob[], prompt: string, opts: GenerateOptions, onToken?: (e: GenerateStream) => void): Promise<GenerateResult> {
    this.idle('generate an answer', true);
    const l = this.alive();
    if (!l) throw new Error('No model is loaded: train a run first, or pick a run whose adapter to use.');
    // a streamed answer is the Playground's; train(), resume() and predictSplit() refuse while any runs
    const who = onToken ? 'Playground' : 'Predictions';
    this.generating.push(who);
    try {
      return await this.generateWith(l, images, prompt, opts, onToken);
    } finally {
      this.generating.splice(this.generating.indexOf(who), 1);
    }
  }

  private async generateWith(l: Loaded, images: Blob[], prompt: string, opts: GenerateOptions, onToken?: (e: GenerateStream) => void): Promise<GenerateResult> {
    const t0 = performance.now();
    const epoch = this.generateEpoch;
    const raws = await Promise.all(images.map((b) => this.deps.decodeImage(b)));
    const cfg = { ...DEFAULT_IMAGE_CONFIG, minPixels: opts.minPixels, maxPixels: opts.maxPixels };
    const processed = raws.map((r) => preprocessImage(r, cfg));
    const tok = l.tokenizer;
    const p = buildPrompt({ messages: [userTurn(prompt, processed.length)], images: processed.map((x) => ({ gridThw: x.imageGridThw })), tokenizer: tok });
    const resized = processed.map((x) => ({ width: x.width, height: x.height }));
    const orig = opts.original?.[0] ?? (raws[0] ? { width: raws[0].width, height: raws[0].height } : undefined);
    let stopped = false;
    const dec = onToken && new IncrementalDecoder((x) => tok.decode(x, { skipSpecialTokens: true }));
    const stream = dec && ((toks: { id: number }[]) => {
      const text = dec.push(toks[0].id);
      const r = onToken!({ text, tokens: dec.tokens, ...answerBoxes(text, resized[0], orig), resized }) as unknown;
      if (r instanceof Promise) r.catch(() => {}); // the page went away: generation goes on, unseen
      if (this.generateEpoch !== epoch) stopped = true;
      return stopped;
    });
    // the chat turn's end always stops; so do the model's own eos ids, as in transformers' generate()
    const stopIds = [...new Set([tok.special.imEnd, tok.special.endOfText, ...((await this.generationConfig(l.spec)).eosTokenIds ?? [])])];
    const [out] = await l.model.generate([{ inputIds: p.inputIds, images: processed.length ? stackImages(processed) : undefined }], {
      maxNewTokens: opts.maxNewTokens ?? 128, stopIds, lora: (opts.adapter ?? true) && !!l.adapter,
      temperature: opts.temperature, topK: opts.topK, topP: opts.topP, seed: opts.seed, repetitionPenalty: opts.repetitionPenalty, onToken: stream,
    });
    const ids = Array.from(out);
    if (ids.length && stopIds.includes(ids[ids.length - 1])) ids.pop();
    const text = tok.decode(ids, { skipSpecialTokens: true });
    return { text, ...answerBoxes(text, resized[0], orig), resized, tokens: out.length, ms: performance.now() - t0, ...(stopped ? { stopped } : {}) };
  }

  async exportAdapter(layout: 'peft' | 'peft-legacy', runId?: string): Promise<AdapterFile[]> {
    if (runId) {
      // From the checkpoint (no GPU, no model): its tensors are keyed by peft name, ≥ 4.52 layout.
      const kv = await this.deps.kv();
      const [meta, ck] = [await kv.get<RunMeta>(metaKey(runId)), await loadLatestCheckpoint(kv, runId)];
      if (!meta || !ck) throw new Error(`Run ${runId} has no checkpoint in this browser: nothing to export yet.`);
      return checkpointAdapterFiles(ck, meta.lora, meta.baseModel, layout);
    }
    this.idle('export the live adapter', true);
    const l = this.alive();
    if (!l?.adapter) throw new Error('No adapter on the model: choose a run to export.');
    return modelAdapterFiles(l.model, layout);
  }

  async importAdapter(files: { name: string; bytes: Uint8Array }[], spec: ModelSpec = { source: 'tiny' }): Promise<AdapterInfo> {
    this.idle('import an adapter');
    const by = new Map(files.map((f) => [f.name.split('/').pop()!, f.bytes]));
    const cfg = by.get('adapter_config.json'), st = by.get('adapter_model.safetensors');
    if (!cfg || !st) throw new Error(`A peft adapter is adapter_config.json + adapter_model.safetensors; got ${files.map((f) => f.name).join(', ') || 'no files'}.`);
    let l = this.alive();
    if (!l) {
      await this.loadModel(spec, null);
      l = this.loaded!;
    }
    await loadAdapterFiles(l.model, { 'adapter_config.json': cfg, 'adapter_model.safetensors': st });
    const lora = parseAdapterConfig(new TextDecoder().decode(cfg));
    const name = (files.find((f) => f.name.endsWith('adapter_model.safetensors'))?.name ?? 'adapter').replace(/\/?adapter_model\.safetensors$/, '') || 'adapter';
    l.adapter = { label: `imported: ${name}`, lora };
    l.info = { ...l.info, warnings: [...l.model.warnings] };
    return this.adapterInfo(l);
  }

  async clusterBundle(config: TrainConfig, datasetId: string): Promise<{ name: string; bytes: Uint8Array; files: string[] }> {
    const { dataset, samples } = await this.deps.loadSamples(datasetId);
    const ds = { ...dataset, minPixels: dataset.minPixels, maxPixels: dataset.maxPixels };
    const ex = exportDataset(ds, samples.map((s) => s.image), 'trl');
    const jsonl = ex.files.find((f) => f.path === 'data.jsonl')?.text ?? '';
    const records = jsonl.split('\n').filter((x) => x.trim()).map((x) => JSON.parse(x) as object);
    const images = await Promise.all(samples.map(async (s) => ({ name: ex.imagePaths.get(s.imageId)!, bytes: new Uint8Array(await s.blob.arrayBuffer()) })));
    // train.py resizes with the dataset's bounds, the frame its box answers are in
    const files = clusterBundle({ ...config, data: { ...config.data, minPixels: dataset.minPixels, maxPixels: dataset.maxPixels } }, { records, images });
    const zip = zipSync(Object.fromEntries(files.map((f) => [f.name, [f.bytes, { level: f.name.startsWith('images/') ? 0 : 6 }]])) as Parameters<typeof zipSync>[0]);
    const base = dataset.name.replace(/[^\w.-]+/g, '_') || 'dataset';
    return { name: `${base}-cluster-${config.method}.zip`, bytes: zip, files: files.map((f) => f.name) };
  }

  // ---- predictions over a split ----------------------------------------------------------------

  private predicting?: { cancel: boolean };

  /**
   * Every grounding question of one side of a run's split, greedy, with the adapter on the model
   * and / or switched off. The split's questions are recomputed from the dataset's records as
   * training makes them, with the run's method, eval section and seed (session/eval.ts
   * splitQuestions), answers are scored as the evaluation scores them (predictGrounding), and boxes
   * are mapped back to original pixels for display.
   */
  async predictSplit(req: PredictSplitRequest, onEvent: (e: PredictSplitEvent) => void): Promise<PredictSplitResult> {
    this.idle('run predictions', true);
    if (this.predicting) throw new Error('Predictions over a split are already running in this tab.');
    this.refuseWhilePredicting('run predictions over a split');
    const l = this.alive();
    if (!l) throw new Error('No model is loaded: train a run first, or pick a run whose adapter to use.');
    if (!req.adapter && !req.base) throw new Error('Nothing to predict with: choose the adapter, the base model or both.');
    if (req.adapter && !l.adapter) throw new Error('The model has no adapter: pick a run or import one, or predict with the base model only.');
    const state = (this.predicting = { cancel: false });
    try {
      let c = mergeConfig(DEFAULT_CONFIG, req.config as DeepPartial<TrainConfig>);
      let datasetId = req.datasetId;
      let heldOut: string[] | undefined;
      if (req.runId) {
        const meta = await (await this.deps.kv()).get<RunMeta>(metaKey(req.runId));
        if (!meta) throw new Error(`Run ${req.runId} has no saved settings in this browser, so its split cannot be recomputed: predict over the whole dataset instead.`);
        c = mergeConfig(DEFAULT_CONFIG, meta.config as DeepPartial<TrainConfig>);
        heldOut = meta.evalImages;
        if (meta.datasetId) datasetId = meta.datasetId;
        else if (req.split !== 'all') throw new Error(`Run ${req.runId} trained on examples passed by the caller, not a stored dataset: only the whole dataset can be predicted.`);
      }
      if (req.split === 'eval' && !(c.eval.evalSplit > 0)) throw new Error(`${req.runId ? `Run ${req.runId}` : 'These settings'} held out no images (eval split 0): choose the train split or the whole dataset.`);
      const { dataset, samples } = await this.deps.loadSamples(datasetId);
      const px = { minPixels: dataset.minPixels, maxPixels: dataset.maxPixels };
      const { examples, from, images, skipped } = await splitQuestions(samples, c, req.split, heldOut, { decode: (b) => this.deps.decodeImage(b), pixels: px, tokenizer: l.tokenizer });
      const emit = (e: PredictSplitEvent) => {
        try {
          onEvent(e);
        } catch {
          /* the page went away */
        }
      };
      emit({ type: 'start', total: examples.length, images: new Set(from.map((f) => f.sample)).size, split: req.split, dataset: dataset.name, method: c.method, ...px });
      const toOriginal = (i: number) => {
        const s = samples[from[i].sample], raw = images.get(from[i].sample)!;
        const resized = resizedSize(raw.width, raw.height, px.minPixels, px.maxPixels), orig = { width: s.image.origWidth, height: s.image.origHeight };
        return (b: [number, number, number, number]) => boxToOriginal(b, resized, orig);
      };
      const answer = (r: QuestionResult, map: (b: [number, number, number, number]) => [number, number, number, number]): SplitAnswer => ({ text: r.completion, parsed: r.parsed, iou: r.iou, boxes: r.predicted.map(map) });
      const questionOf = (q: PredictedQuestion): SplitQuestion => {
        const src = from[q.index], s = samples[src.sample], map = toOriginal(q.index), r = src.record;
        return {
          index: q.index, imageId: s.imageId, name: s.name, question: r.kind === 'sft' ? r.question : r.kind === 'rl' ? r.prompt : '', where: src.where,
          width: s.image.origWidth, height: s.image.origHeight, labelled: groundingReference(examples[q.index]).map(map),
          ...(q.adapter ? { adapter: answer(q.adapter, map) } : {}), ...(q.base ? { base: answer(q.base, map) } : {}),
        };
      };
      const questions: SplitQuestion[] = [];
      const r = await predictGrounding({
        model: l.model, tokenizer: l.tokenizer, examples, config: c, pixels: px, maxNewTokens: req.maxNewTokens, adapter: req.adapter, base: req.base,
        cancelled: () => state.cancel,
        onQuestion: (q, done, total) => {
          const sq = questionOf(q);
          questions.push(sq);
          emit({ type: 'question', question: sq, done, total });
        },
      });
      return { questions, cancelled: r.cancelled, skipped };
    } finally {
      this.predicting = undefined;
    }
  }

  /** Stop predictSplit after the question in progress. */
  cancelPredictSplit(): void {
    if (this.predicting) this.predicting.cancel = true;
  }

  // ---- playground: cancelling a streamed answer ------------------------------------------------

  /** bumped by cancelGenerate(): streamed answers begun before it stop after their current token */
  private generateEpoch = 0;
  /** who asked for each generate() in flight ('Playground': streamed, 'Predictions'), for refuseWhilePredicting */
  private generating: string[] = [];

  /** Stop the streamed answers in flight (generate with onToken): each returns its text so far, `stopped`; the model stays loaded and usable. */
  async cancelGenerate(): Promise<void> {
    this.generateEpoch++;
  }

  /**
   * The merged model (export/merged.ts): a run's adapter (its last checkpoint) or the adapter on
   * the model now, added into the full-precision base and written file by file — into `req.dir`
   * (a folder the user picked with the File System Access API; each file streamed tensor by
   * tensor), or else handed to `onFile` one Blob at a time for the page to download. config.json
   * is written last, so a folder cut short is not a loadable model. cancelExportMerged() stops it
   * between two reads: a picked folder then loses the files this export wrote (the file being
   * written is aborted, never swapped in), and the error says "cancelled".
   */
  async exportMerged(req: MergedRequest, onFile?: (f: { name: string; blob: Blob }) => Promise<void>, onProgress?: (p: MergedProgress) => void): Promise<MergedResult> {
    this.idle('export the merged model', true);
    if (this.mergedAbort) throw new Error('A merged export is already running: wait for it, or cancel it.');
    const abort = (this.mergedAbort = new AbortController());
    try {
      return await this.exportMergedWith(req, abort.signal, onFile, onProgress);
    } finally {
      this.mergedAbort = undefined;
    }
  }

  /** the export in flight (exportMerged), for cancelExportMerged */
  private mergedAbort?: AbortController;

  /** Stop the merged export in flight (no-op when none): it rejects with a message that says "cancelled". */
  async cancelExportMerged(): Promise<void> {
    this.mergedAbort?.abort();
  }

  private async exportMergedWith(req: MergedRequest, signal: AbortSignal, onFile?: (f: { name: string; blob: Blob }) => Promise<void>, onProgress?: (p: MergedProgress) => void): Promise<MergedResult> {
    let spec: ModelSpec, lora: LoraConfig, adapterFiles: AdapterFile[];
    const l = this.alive();
    if (req.runId) {
      const kv = await this.deps.kv();
      const [meta, ck] = [await kv.get<RunMeta>(metaKey(req.runId)), await loadLatestCheckpoint(kv, req.runId)];
      if (!meta || !ck) throw new Error(`Run ${req.runId} has no checkpoint in this browser: nothing to merge yet.`);
      // a local folder's Files are only known for the folder loaded in this session
      spec = meta.model.source === 'local' && l?.spec.source === 'local' && l.spec.name === meta.model.name ? l.spec : meta.model;
      lora = meta.lora;
      adapterFiles = checkpointAdapterFiles(ck, meta.lora, meta.baseModel);
    } else {
      if (!l?.adapter) throw new Error('No adapter on the model: choose a run to merge.');
      spec = l.spec;
      lora = l.adapter.lora;
      adapterFiles = await modelAdapterFiles(l.model);
    }
    // an adapter trained on a 4-bit base merges into the full-precision weights
    if (spec.source === 'hub') spec = { ...spec, repo: fullPrecisionBaseId(spec.repo) };
    const source = await sourceOf(spec, this.host);
    const config = await readModelConfig(source);
    const adapter = adapterFromPeftFiles(adapterFiles, config, `adapter (r ${lora.r})`);
    const extraFiles = spec.source === 'tiny' ? { 'tokenizer.json': new TextEncoder().encode(JSON.stringify(await defaultTokenizerJson())) } : undefined;
    const dir = req.dir as (FileSystemDirectoryHandle & { values?(): AsyncIterable<FileSystemHandle> }) | undefined;
    if (!dir && !onFile) throw new Error('exportMerged: pass a folder or an onFile callback');
    if (dir) {
      // an earlier export in the folder stops looking complete before anything is replaced
      for (const f of ['config.json', 'model.safetensors.index.json']) await dir.removeEntry(f).catch(() => undefined);
    }
    const written = new Set<string>();
    const sink: MergedSink = {
      async writeFile(name, size, chunks) {
        if (dir) {
          const w = await (await dir.getFileHandle(name, { create: true })).createWritable();
          try {
            for await (const c of chunks) await w.write(c as Uint8Array<ArrayBuffer>);
            await w.close(); // the browser swaps the file in only now
          } catch (e) {
            await w.abort().catch(() => undefined);
            throw e;
          }
        } else {
          const parts: BlobPart[] = [];
          for await (const c of chunks) parts.push(c.slice() as Uint8Array<ArrayBuffer>);
          const blob = new Blob(parts, { type: name.endsWith('.json') ? 'application/json' : 'application/octet-stream' });
          if (blob.size !== size) throw new Error(`${name}: ${blob.size} bytes, planned ${size} (internal error)`);
          await onFile!({ name, blob });
        }
        written.add(name);
      },
    };
    let last = -1, lastFile = '';
    let s: Awaited<ReturnType<typeof exportMerged>>;
    try {
      signal.throwIfAborted();
      s = await exportMerged(source, adapter, sink, {
        maxShardSize: req.maxShardSize, extraFiles, signal,
        onProgress: (p) => {
          // at most ~200 messages across the thread boundary
          const step = Math.floor((200 * p.bytes) / Math.max(1, p.total));
          if (step !== last || p.file !== lastFile) onProgress?.(p);
          last = step;
          lastFile = p.file;
        },
      });
    } catch (e) {
      if (!signal.aborted) throw e;
      // config.json comes last, so it was never written: what was written is a model cut short
      if (dir) {
        for (const f of written) await dir.removeEntry(f).catch(() => undefined);
        const n = written.size;
        const what = n === 0 ? `nothing had been written into "${dir.name}" yet` : `the ${n === 1 ? 'file' : `${n} files`} it had written into "${dir.name}" ${n === 1 ? 'was' : 'were'} removed`;
        throw new Error(`Merged export cancelled: ${what}; the folder holds no config.json, so nothing in it looks like a model.`);
      }
      throw new Error(`Merged export cancelled after ${written.size} file${written.size === 1 ? '' : 's'}${written.size ? ` (${[...written].join(', ')})` : ''}: config.json was not downloaded, so they are not a model — delete them.`);
    }
    if (dir?.values) {
      // shards of an earlier export with another shard count would sit beside the new ones
      for await (const h of dir.values()) if (h.kind === 'file' && /^model(-\d{5}-of-\d{5})?\.safetensors$/.test(h.name) && !written.has(h.name)) await dir.removeEntry(h.name);
    }
    return { ...s, base: source.id };
  }
}

class StopBeforeStart extends Error {}
/** Thrown from an evaluation's progress callback when Stop was pressed: the evaluation ends there. */
class EvalStopped extends Error {}

/** Same key = same weights on the GPU (the spec, and the quantisation they were loaded with). */
function modelKey(spec: ModelSpec, quant: { quantize?: 'nf4'; quantizeVision?: boolean }): string {
  return specKey(spec) + (quant.quantize ? `|${quant.quantize}${quant.quantizeVision === false ? ':text' : ''}` : '');
}

/**
 * The parsed bbox_2d boxes of an answer: as written (the resized frame of the first image) and
 * mapped back to its original pixels (boxToOriginal). Predictions, the Playground and its stream
 * all take their boxes from here.
 */
function answerBoxes(text: string, resized: { width: number; height: number } | undefined, orig: { width: number; height: number } | undefined): Pick<GenerateResult, 'boxes' | 'resizedBoxes'> {
  const groundings = parseGroundings(text);
  return {
    resizedBoxes: groundings.map((g) => g.bbox),
    boxes: resized && orig ? groundings.map((g) => ({ bbox: boxToOriginal(g.bbox, resized, orig), ...(g.label ? { label: g.label } : {}) })) : [],
  };
}

function gpuLostReason(): string | undefined {
  try {
    gpu();
    return undefined;
  } catch (e) {
    return /lost \((.*)\)\./.exec((e as Error).message)?.[1];
  }
}
