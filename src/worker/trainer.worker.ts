// The engine's only door to the UI: a dedicated Worker that owns the WebGPU device and exposes
// the Trainer API (src/worker/api.ts) through comlink. Keep it thin: the work is in engine.ts (and
// below it src/gpu, src/ops, src/model, src/train); this file gives it the browser's IndexedDB,
// Web Locks and image decoder, and adapts it to structured-clonable calls.
import * as Comlink from 'comlink';
import { GpuError, gpu, hasGpu, initGpu, onDeviceLost } from '../gpu/device.ts';
import { fromData, packBf16, read, unpackBf16, type Tensor } from '../gpu/tensor.ts';
import { matmul, matmulVariant } from '../ops/matmul.ts';
import { runSelfTest, variantInfo } from '../gpu/selftest.ts';
import { idbKV, type KV } from '../train/checkpoint.ts';
import { loadDefaultTokenizer } from '../data/tokenizer.ts';
import type { RawImage } from '../data/image.ts';
import { loadSamples } from '../data/datasetSamples.ts';
import { Engine } from './engine.ts';
import type { DeviceLost, InitResult, SelfTestResult, TrainerApi } from './api.ts';

// ---- the engine's host services -------------------------------------------------------------------

let kv: Promise<KV> | undefined;

/** RGBA pixels of an image Blob, as stored (no colour-space conversion, no premultiplied alpha). */
async function decodeImage(blob: Blob): Promise<RawImage> {
  let bmp: ImageBitmap;
  try {
    bmp = await createImageBitmap(blob, { premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
  } catch {
    throw new Error(`An image (${blob.type || 'unknown type'}, ${blob.size} bytes) could not be decoded.`);
  }
  try {
    const c = new OffscreenCanvas(bmp.width, bmp.height);
    const g = c.getContext('2d', { willReadFrequently: true });
    if (!g) throw new Error('no 2D canvas in this worker to read image pixels');
    g.drawImage(bmp, 0, 0);
    const d = g.getImageData(0, 0, bmp.width, bmp.height);
    return { data: d.data, width: d.width, height: d.height, channels: 4 };
  } finally {
    bmp.close();
  }
}

/** Web Locks: the release function of `name` if no other tab holds it, else null. */
function lock(name: string): Promise<(() => void) | null> {
  const locks = (self.navigator as Navigator).locks;
  if (!locks) return Promise.resolve(() => {}); // no Web Locks: single-tab semantics
  return new Promise((resolve, reject) => {
    locks
      .request(name, { ifAvailable: true }, async (l) => {
        if (!l) return resolve(null);
        let release!: () => void;
        const held = new Promise<void>((r) => (release = r));
        resolve(release);
        await held; // held until the run ends
      })
      .catch(reject);
  });
}

const engine = new Engine({
  kv: () => (kv ??= idbKV()),
  decodeImage,
  loadSamples: (id) => loadSamples(id),
  lock,
  defaultTokenizer: loadDefaultTokenizer,
});

// ---- device loss ------------------------------------------------------------------------------

const lostWatchers = new Set<(e: DeviceLost) => void>();
onDeviceLost((reason) => {
  // initGpu() destroys the previous device when it makes a new one; that is not a loss to report.
  if (hasGpu()) return;
  for (const cb of lostWatchers) cb({ reason });
  lostWatchers.clear();
});

// ---- self-test ----------------------------------------------------------------------------------

// The product's own matmul kernel (shaders/matmul.wgsl through src/ops/matmul.ts) on the path a
// model layer takes: y = x·Wᵀ + b with W in packed BF16. It proves that WGSL compiles, bindings,
// uniforms, dispatch and readback work inside this worker on this adapter.

/** Deterministic inputs in [-1, 1) (LCG), so every run and every adapter compares the same numbers. */
function pseudoRandom(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

// ---- the API ----------------------------------------------------------------------------------

const api: TrainerApi = {
  async init(): Promise<InitResult> {
    const methods = Object.keys(api);
    const wgpu = (self.navigator as Navigator & { gpu?: GPU }).gpu;
    if (!wgpu) {
      return {
        ok: false,
        kind: 'no-webgpu',
        message: 'navigator.gpu is undefined inside the Web Worker: this browser has no WebGPU, or it is switched off.',
        methods,
      };
    }
    lostWatchers.clear(); // callbacks of a previous device; the page registers again after init
    try {
      const g = await initGpu(wgpu);
      // feature kernels (subgroups, f16) run only after they match the f32 path on this adapter
      const variants = await runSelfTest().then(variantInfo, () => undefined);
      const info = (g.device as GPUDevice & { adapterInfo?: GPUAdapterInfo & { isFallbackAdapter?: boolean } }).adapterInfo;
      return {
        ok: true,
        adapterName: g.adapterName,
        vendor: info?.vendor ?? '',
        architecture: info?.architecture ?? '',
        limits: g.limits,
        features: g.features,
        hasF16: g.hasF16,
        isFallback: info?.isFallbackAdapter === true || /swiftshader/i.test(g.adapterName),
        variants,
        methods,
      };
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      return { ok: false, kind: /requestAdapter returned null/.test(message) ? 'no-adapter' : 'device-failed', message, methods };
    }
  },

  async selfTest(): Promise<SelfTestResult> {
    const g = gpu(); // throws a clear GpuError when there is no device or it was lost
    const [M, N, K] = [37, 29, 53]; // odd on purpose: not multiples of any tile size
    const x = pseudoRandom(M * K, 1), b = pseudoRandom(N, 3);
    const w = unpackBf16(packBf16(pseudoRandom(N * K, 2)), N * K); // the values BF16 can hold
    const variant = matmulVariant();
    const t0 = performance.now();
    const tx = fromData(x, [M, K], 'f32', 'selftest.x');
    const tw = fromData(w, [N, K], 'bf16', 'selftest.W');
    const tb = fromData(b, [N], 'f32', 'selftest.b');
    let got: Float32Array;
    let ty: Tensor | undefined;
    try {
      ty = matmul(tx, tw, { bias: tb, name: 'selftest.y' });
      got = await read(ty);
    } finally {
      for (const t of [tx, tw, tb, ty]) t?.release();
    }
    const ms = performance.now() - t0;
    let maxAbsError = 0;
    const expected = new Float64Array(M * N);
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let k = 0; k < K; k++) acc += x[m * K + k] * w[n * K + k];
        expected[m * N + n] = acc + b[n];
        maxAbsError = Math.max(maxAbsError, Math.abs(got[m * N + n] - expected[m * N + n]));
      }
    if (!Number.isFinite(maxAbsError)) maxAbsError = Infinity; // NaN from the GPU fails loudly
    const tolerance = 1e-4;
    const sample = [0, 1, M * N - 2, M * N - 1];
    return {
      kernel: `matmul y = x·Wᵀ + b, W in BF16 (shaders/matmul.wgsl, ${variant} variant)`,
      shape: [M, N, K],
      gpuSample: sample.map((i) => got[i]),
      cpuSample: sample.map((i) => expected[i]),
      maxAbsError,
      tolerance,
      pass: maxAbsError <= tolerance,
      ms,
      adapterName: g.adapterName,
    };
  },

  async watchDeviceLost(cb: (e: DeviceLost) => void): Promise<void> {
    if (!hasGpu()) throw new GpuError('No WebGPU device to watch: call init() first.');
    lostWatchers.add(cb);
  },

  loadModel: (spec, lora, onProgress) => engine.loadModel(spec, lora, onProgress),
  modelInfo: async () => engine.modelInfo(),
  generationConfig: (spec) => engine.generationConfig(spec),
  estimate: (config, datasetId, files) => engine.estimate(config, datasetId, files),
  train: (req, onEvent) => engine.train(req, onEvent),
  pause: () => engine.pause(),
  resume: () => engine.resume(),
  stop: () => engine.stop(),
  resumeRun: (runId, onEvent, files) => engine.resumeRun(runId, onEvent, files),
  deleteRun: (runId) => engine.deleteRun(runId),
  checkpointStep: (runId) => engine.checkpointStep(runId),
  useAdapter: (choice) => engine.useAdapter(choice),
  async generate(images, prompt, opts, onToken) {
    try {
      return await engine.generate(images, prompt, opts, onToken);
    } finally {
      // the page's callback port lives until released: one per streamed answer otherwise
      (onToken as { [Comlink.releaseProxy]?: () => void } | undefined)?.[Comlink.releaseProxy]?.();
    }
  },
  async exportAdapter(layout, runId) {
    const files = await engine.exportAdapter(layout, runId);
    return Comlink.transfer(files, [...new Set(files.map((f) => f.bytes.buffer as ArrayBuffer))]);
  },
  importAdapter: (files, spec) => engine.importAdapter(files, spec),
  async clusterBundle(config, datasetId) {
    const b = await engine.clusterBundle(config, datasetId);
    return Comlink.transfer(b, [b.bytes.buffer as ArrayBuffer]);
  },
  predictSplit: (req, onEvent) => engine.predictSplit(req, onEvent),
  cancelPredictSplit: async () => engine.cancelPredictSplit(),
  cancelGenerate: () => engine.cancelGenerate(),
  exportMerged: (req, onFile, onProgress) => engine.exportMerged(req, onFile, onProgress),
  cancelExportMerged: () => engine.cancelExportMerged(),
};

Comlink.expose(api);
