// Types of the Trainer API that src/worker/trainer.worker.ts exposes through comlink. The page
// holds a `Remote<TrainerApi>` (src/worker/client.ts); every call is async across the thread
// boundary, and every value crossing it is structured-cloned (no classes, no GPU objects).
// Long work takes its callback wrapped in `Comlink.proxy(...)` on the page side, so the worker can
// call back (progress of a model load, one event per training step).
//
// The page learns which methods a worker build has from `InitResult.methods`, so a button is
// enabled only when its method exists.
import type { TrainConfig } from '../config/config.ts';
import type { ModelSpec, LoraSettings, LoadProgress } from '../session/model.ts';
import type { MemoryReport } from '../session/estimate.ts';
import type { AdapterFile } from '../export/peft.ts';
import type { MergedProgress, MergedSummary } from '../export/merged.ts';
export type { ModelSpec, LoraSettings, LoadProgress, MemoryReport, AdapterFile, MergedProgress };
import type { TaskRecord } from '../data/formats/records.ts';
import type { VariantInfo } from '../gpu/selftest.ts';
import type { GenerationDefaults } from '../model/generationConfig.ts';
export type { GenerationDefaults };

/** The limits the studio shows; the full set is in `GpuReport.limits`. */
export const KEY_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
] as const;
export type KeyLimit = (typeof KEY_LIMITS)[number];

export interface GpuReport {
  ok: true;
  /** "vendor architecture device description" as the adapter reports it */
  adapterName: string;
  vendor: string;
  architecture: string;
  /** every numeric limit of the device (requested at the adapter's maxima) */
  limits: Record<string, number>;
  features: string[];
  hasF16: boolean;
  /** true when the adapter says it is a software/fallback adapter (e.g. SwiftShader) */
  isFallback: boolean;
  /** feature kernel variants (subgroups, shader-f16) and the startup self-test's verdict on each */
  variants?: VariantInfo[];
}

/**
 * Why there is no GPU:
 * - `no-webgpu`: `navigator.gpu` is undefined in the worker (browser without WebGPU, or disabled);
 * - `no-adapter`: WebGPU exists but `requestAdapter()` found no adapter (blocklisted/absent driver);
 * - `device-failed`: an adapter was found but creating the device failed.
 */
export interface GpuFailure {
  ok: false;
  kind: 'no-webgpu' | 'no-adapter' | 'device-failed';
  message: string;
}

export type InitResult = (GpuReport | GpuFailure) & {
  /** names of the methods this worker build implements (e.g. 'init', 'selfTest', later 'train') */
  methods: string[];
};

export interface SelfTestResult {
  /** what ran, e.g. "matmul y = x·Wᵀ + b (inline WGSL)" */
  kernel: string;
  /** [M, N, K] */
  shape: [number, number, number];
  /** the first few GPU outputs and the CPU-computed (f64) expected values at the same indices */
  gpuSample: number[];
  cpuSample: number[];
  maxAbsError: number;
  tolerance: number;
  pass: boolean;
  /** wall time of upload + dispatch + readback in the worker, ms */
  ms: number;
  adapterName: string;
}

export interface DeviceLost {
  /** GPUDeviceLostReason ('destroyed' | 'unknown') and the browser's message */
  reason: string;
}

// ---- models ------------------------------------------------------------------------------------

export interface ModelInfo {
  /** identifies the source (same key = same weights) */
  key: string;
  /** "tiny model (seed 0)", "hub Qwen/Qwen2.5-VL-3B-Instruct@main", ... */
  sourceId: string;
  /** what the run history shows: "tiny", the hub id or the folder name */
  name: string;
  config: {
    layers: number;
    hidden: number;
    heads: number;
    kvHeads: number;
    intermediate: number;
    vocab: number;
    visionDepth: number;
    visionHidden: number;
    tiedEmbeddings: boolean;
  };
  /** parameters of the base model */
  params: number;
  lora: { params: number; modules: number; r: number; alpha: number; scale: number } | null;
  memory: MemoryReport;
  /** GPU bytes the weights and adapter hold */
  gpuBytes: number;
  /** frozen base tensors held as 4-bit NF4 (0: a BF16 base): quantised on load or a bitsandbytes 4-bit checkpoint */
  nf4Tensors: number;
  /** notes from the model and the engine about the run (e.g. settings it adjusted) */
  warnings: string[];
  loadMs: number;
}

export interface EstimateResult {
  memory: MemoryReport;
  loraParams: number;
  /** training examples the dataset gives under the method, the held-out split left out (undefined without a dataset) */
  examples?: number;
  /** with an eval split: the examples held out for evaluation and their images, of the dataset's images with examples */
  evalExamples?: number;
  evalImages?: number;
  datasetImages?: number;
  totalSteps?: number;
  /** forward + backward FLOPs of one optimizer step (rough) */
  flopsPerStep: number;
  secondsPerStep?: number;
  totalSeconds?: number;
  /** where the time comes from: a previous run of this model here, or FLOPs ÷ a measured matmul rate */
  timeBasis?: 'measured' | 'flops';
  /** why no estimate could be made for something (e.g. a hub config that could not be fetched) */
  notes: string[];
}

// ---- training ----------------------------------------------------------------------------------

/** A training record with its images, for callers that do not train on a stored dataset. */
export interface ExampleInput {
  images: Blob[];
  record: TaskRecord;
}

export interface TrainRequest {
  /** the run in the page's run history; checkpoints are stored under it */
  runId: string;
  config: TrainConfig;
  /** the model (defaults to config.model; a local folder needs its files here) */
  model?: ModelSpec;
  data: { datasetId: string } | { examples: ExampleInput[]; minPixels?: number; maxPixels?: number };
  /** continue from the imported adapter instead of a fresh peft initialisation */
  startFrom?: 'fresh' | 'imported';
  /** save a checkpoint every N optimizer steps (default config.optim.saveSteps; 0 = only on pause/stop/end) */
  checkpointEvery?: number;
  /** train on the records that pass the checks, leaving out (and naming, as warnings) the others; default: refuse the run, naming them all */
  skipInvalid?: boolean;
}

export type RunState = 'loading' | 'running' | 'pausing' | 'paused' | 'stopping' | 'stopped' | 'done' | 'failed' | 'device-lost';

export type TrainEvent =
  | { type: 'status'; status: RunState; message?: string; step?: number }
  | { type: 'progress'; progress: LoadProgress }
  | { type: 'model'; info: ModelInfo }
  /**
   * `evalExamples` / `evalImages` (image names) / `datasetImages`: the held-out split (session/split.ts, by image, seeded by
   * optim.seed) out of the images with examples, when there is one; `evalImageIds`: its images' ids in a stored dataset
   */
  | { type: 'data'; examples: number; skipped: number; minPixels: number; maxPixels: number; evalExamples?: number; evalImages?: string[]; datasetImages?: number; evalImageIds?: string[] }
  | { type: 'warning'; message: string }
  /** the run continues from a checkpoint: steps after `step` in the page's history are void */
  | { type: 'resumed'; step: number }
  | { type: 'step'; step: number; totalSteps: number; metrics: Record<string, number> }
  | { type: 'checkpoint'; step: number }
  /** evaluating the held-out split after step `step`: `done` of `total` examples (training waits meanwhile) */
  | { type: 'eval-progress'; step: number; done: number; total: number }
  /** the held-out split's metrics after step `step` (session/eval.ts: trl's names with the eval_ prefix) */
  | { type: 'eval'; step: number; metrics: Record<string, number> };

export interface RunSummary {
  runId: string;
  status: 'done' | 'stopped' | 'failed' | 'device-lost';
  step: number;
  totalSteps: number;
  /** step of the last checkpoint saved (what Resume continues from) */
  checkpointStep: number | null;
  message?: string;
  /** refused before step 1 because this many records cannot be trained on (TrainRequest.skipInvalid trains on the rest) */
  invalidRecords?: number;
}

/** Thrown (as its message) when another tab trains this run. */
export const RUN_LOCKED = 'is being trained in another tab';

// ---- inference and adapters ----------------------------------------------------------------------

export interface GenerateOptions {
  maxNewTokens?: number;
  /** apply the adapter (default true); false = the base model */
  adapter?: boolean;
  /** the smart_resize bounds the boxes were trained with (the dataset's) */
  minPixels: number;
  maxPixels: number;
  /** the images' original sizes (default: their decoded sizes), for mapping boxes back */
  original?: { width: number; height: number }[];
  /** sampling (model/generate.ts): absent or 0 = greedy; else temperature → top-k (0: all) → top-p (1: all), seeded (default seed 0) */
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  /** transformers' repetition_penalty (model/generate.ts; 1 or absent: off), greedy or sampled */
  repetitionPenalty?: number;
}

/** What a streamed generate() reports after each token: the settled answer so far and its boxes (as in GenerateResult). */
export interface GenerateStream {
  text: string;
  /** tokens generated so far (a stop token included) */
  tokens: number;
  boxes: GenerateResult['boxes'];
  resizedBoxes: GenerateResult['resizedBoxes'];
  resized: GenerateResult['resized'];
}

export interface GenerateResult {
  text: string;
  /** parsed bbox_2d boxes in original pixels of the first image */
  boxes: { bbox: [number, number, number, number]; label?: string }[];
  /** the same boxes as the model wrote them (resized frame) */
  resizedBoxes: [number, number, number, number][];
  /** size of the resized frame of each image */
  resized: { width: number; height: number }[];
  tokens: number;
  ms: number;
  /** cancelGenerate() ended it early: the answer so far */
  stopped?: boolean;
}

/** The adapter generate() applies. */
export type AdapterChoice = { kind: 'run'; runId: string } | { kind: 'current' };

export interface AdapterInfo {
  /** "run-…", "imported: name", "fresh" */
  label: string;
  runId?: string;
  step?: number;
  modules: number;
  params: number;
  r: number;
}

// ---- predictions over a split --------------------------------------------------------------------

/** Predict every grounding question of one side of a run's split (session/split.ts splitSide). */
export interface PredictSplitRequest {
  /** the dataset (a run's own dataset wins: its split is over that one) */
  datasetId: string;
  /** whose split: the run's stored settings (method, eval section, seed); without one, `config` */
  runId?: string;
  config: TrainConfig;
  /** 'eval': the images the run held out; 'train': the ones it trained on; 'all': every image */
  split: 'eval' | 'train' | 'all';
  /** decode with the adapter on the model (Engine.useAdapter first) and / or with it switched off */
  adapter: boolean;
  base: boolean;
  /** greedy decoding length (default: the config's eval.evalMaxNewTokens) */
  maxNewTokens?: number;
}

/** One model's answer to a question of the split, scored as the evaluation scores it (session/eval.ts scoreGrounding). */
export interface SplitAnswer {
  text: string;
  /** at least one box parsed */
  parsed: boolean;
  iou: number;
  /** parsed boxes in original pixels */
  boxes: [number, number, number, number][];
}

export interface SplitQuestion {
  /** position in the split (the order training evaluates it) */
  index: number;
  imageId: string;
  name: string;
  question: string;
  /** the record, as the run's messages name it ('image "cat.png" (question 2)') */
  where: string;
  /** original size of the image (the boxes' frame) */
  width: number;
  height: number;
  /** labelled boxes in original pixels */
  labelled: [number, number, number, number][];
  adapter?: SplitAnswer;
  base?: SplitAnswer;
}

export type PredictSplitEvent =
  | { type: 'start'; total: number; images: number; split: PredictSplitRequest['split']; dataset: string; method: TrainConfig['method']; minPixels: number; maxPixels: number }
  | { type: 'question'; question: SplitQuestion; done: number; total: number };

export interface PredictSplitResult {
  questions: SplitQuestion[];
  /** stopped by cancelPredictSplit(): `questions` are the ones done */
  cancelled: boolean;
  /** records of the split that are not grounding questions (no box answer) or failed the checks, left out */
  skipped: number;
}

export interface TrainerApi {
  /** Create the WebGPU device inside the worker. Never throws for a missing GPU: returns a GpuFailure. */
  init(): Promise<InitResult>;
  /** Run a real WGSL kernel on the worker's device and compare with a CPU reference. Throws without a device. */
  selfTest(): Promise<SelfTestResult>;
  /** Register a callback (pass `Comlink.proxy(fn)`) called once when the current device is lost. */
  watchDeviceLost(cb: (e: DeviceLost) => void): Promise<void>;

  /** Load a base model with a fresh adapter. Refuses, with the numbers, what would not fit; a failed load leaves nothing on the GPU. */
  loadModel(spec: ModelSpec, lora: LoraSettings | null, onProgress?: (p: LoadProgress) => void): Promise<ModelInfo>;
  /** The loaded model, or null. */
  modelInfo(): Promise<ModelInfo | null>;
  /** The model's generation_config.json checked field by field (found false: none; warnings name bad fields), without loading it. */
  generationConfig(spec: ModelSpec): Promise<GenerationDefaults>;
  /** Memory and time of a run with these settings, before it starts (sizes from the dataset when given). */
  estimate(config: TrainConfig, datasetId?: string, files?: File[]): Promise<EstimateResult>;
  /** Train until done, stopped or failed; `onEvent` gets the status, each step's metrics and checkpoints. */
  train(req: TrainRequest, onEvent: (e: TrainEvent) => void): Promise<RunSummary>;
  /** Pause after the current step (a checkpoint is saved); resolves once paused. */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Stop after the current step (a checkpoint is saved); resolves once stopped. */
  stop(): Promise<void>;
  /** Continue a run from its last checkpoint (after a reload, a stop, a fault or a lost device). */
  resumeRun(runId: string, onEvent: (e: TrainEvent) => void, files?: File[]): Promise<RunSummary>;
  /** Forget a run's checkpoints. */
  deleteRun(runId: string): Promise<void>;
  /** Whether a run has a checkpoint, and at which step. */
  checkpointStep(runId: string): Promise<number | null>;

  /** Put a run's adapter (its last checkpoint) on the loaded model, loading the run's model if needed. */
  useAdapter(choice: AdapterChoice): Promise<AdapterInfo>;
  /** An answer for images + prompt with the current adapter (or the base model), greedy unless sampling is set, boxes mapped to original pixels; `onToken` (a `Comlink.proxy`) streams it. */
  generate(images: Blob[], prompt: string, opts: GenerateOptions, onToken?: (e: GenerateStream) => void): Promise<GenerateResult>;
  /** peft files of a run (from its checkpoint, no GPU needed) or of the adapter on the model. */
  exportAdapter(layout: 'peft' | 'peft-legacy', runId?: string): Promise<AdapterFile[]>;
  /** Load a peft adapter (adapter_config.json + adapter_model.safetensors) onto the model, to evaluate or continue training. */
  importAdapter(files: { name: string; bytes: Uint8Array }[], spec?: ModelSpec): Promise<AdapterInfo>;
  /** "Train on a cluster": the dataset, train.py and configs as one zip. */
  clusterBundle(config: TrainConfig, datasetId: string): Promise<{ name: string; bytes: Uint8Array; files: string[] }>;
  /** Greedy predictions over a run's eval split, its train split or the whole dataset; `onEvent` gets each question as it is done. */
  predictSplit(req: PredictSplitRequest, onEvent: (e: PredictSplitEvent) => void): Promise<PredictSplitResult>;
  /** Stop predictSplit after the question in progress (its result holds the questions done). */
  cancelPredictSplit(): Promise<void>;
  /** Stop the streamed generate() answers in flight after their current token (they resolve with `stopped`); the model stays usable. */
  cancelGenerate(): Promise<void>;
  /**
   * The merged model (LoRA added into the full-precision base) as a Hugging Face folder, written
   * into `req.dir` file by file, or handed to `onFile` one file at a time (pass both callbacks
   * wrapped in Comlink.proxy).
   */
  exportMerged(req: MergedRequest, onFile?: (f: { name: string; blob: Blob }) => Promise<void>, onProgress?: (p: MergedProgress) => void): Promise<MergedResult>;
  /** Stop the merged export in flight: it rejects saying "cancelled"; a picked folder keeps no file of it (config.json is never written). */
  cancelExportMerged(): Promise<void>;
}

/** What exportMerged merges and where it writes. */
export interface MergedRequest {
  /** a run's last checkpoint; absent: the adapter on the model now */
  runId?: string;
  /** per shard, as transformers ("5GB", "500MB", bytes); default export/merged.ts DEFAULT_MAX_SHARD_SIZE */
  maxShardSize?: string;
  /** a folder the user picked (File System Access API, readwrite); absent: files go to onFile */
  dir?: FileSystemDirectoryHandle;
}

export interface MergedResult extends MergedSummary {
  /** the base the adapter was merged into */
  base: string;
}
