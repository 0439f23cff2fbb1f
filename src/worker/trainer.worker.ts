// The engine's only door to the UI: a dedicated Worker that owns the WebGPU device and exposes
// the Trainer API (src/worker/api.ts) through comlink. Keep it thin: engine code lives in
// src/gpu, src/ops, src/model, src/train; this file adapts it to structured-clonable calls.
import * as Comlink from 'comlink';
import { GpuError, gpu, hasGpu, initGpu, onDeviceLost } from '../gpu/device.ts';
import { fromData, packBf16, read, unpackBf16, type Tensor } from '../gpu/tensor.ts';
import { matmul, matmulVariant } from '../ops/matmul.ts';
import type { DeviceLost, InitResult, SelfTestResult, TrainerApi } from './api.ts';

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
};

Comlink.expose(api);
