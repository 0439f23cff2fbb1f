// Types of the Trainer API that src/worker/trainer.worker.ts exposes through comlink. The page
// holds a `Remote<TrainerApi>` (src/worker/client.ts); every call is async across the thread
// boundary, and every value crossing it is structured-cloned (no classes, no GPU objects).
//
// Only methods that really work are here. Later methods follow the same shape — long work takes
// its callbacks wrapped in `Comlink.proxy(...)` on the page side, so the worker can call back:
//
//   loadModel(source: ModelSource, onProgress: (p: { phase: string; loaded: number; total: number }) => void): Promise<ModelInfo>
//   train(config: TrainConfig, onStep: (m: { step: number; metrics: Record<string, number> }) => void): Promise<RunSummary>
//   pause(): Promise<void>;  resume(): Promise<void>;  stop(): Promise<void>
//   generate(images: Blob[], prompt: string, opts: GenerateOptions): Promise<string[]>
//   exportAdapter(layout: 'peft' | 'peft-legacy'): Promise<{ name: string; bytes: Uint8Array }[]>
//
// The page learns which of these a worker build has from `InitResult.methods`, so a button is
// enabled only when its method exists.

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

export interface TrainerApi {
  /** Create the WebGPU device inside the worker. Never throws for a missing GPU: returns a GpuFailure. */
  init(): Promise<InitResult>;
  /** Run a real WGSL kernel on the worker's device and compare with a CPU reference. Throws without a device. */
  selfTest(): Promise<SelfTestResult>;
  /** Register a callback (pass `Comlink.proxy(fn)`) called once when the current device is lost. */
  watchDeviceLost(cb: (e: DeviceLost) => void): Promise<void>;
}
