// Peer matmul implementations on the SAME WebGPU device as ours, for `npm run bench`:
// tf.js (WebGPU backend), ONNX Runtime Web (WebGPU EP, MatMul-only model), jax-js (webgpu).
// Each peer computes Y[M,N] = X[M,K]·W[N,K]ᵀ in f32 (none of them takes packed bf16 weights);
// ORT gets W pre-transposed as a [K,N] initializer, the layout ONNX MatMul wants.
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { gpu } from '../gpu/device.ts';
import { matmulModel } from './onnx.ts';

export interface Prepared {
  /** issue `reps` calls back to back, wait for the device, return ms per call */
  time(reps: number): Promise<number>;
  /** one call's output, for a sanity check against ours */
  result(): Promise<Float32Array>;
  dispose(): void;
}

export interface Peer {
  name: string;
  prepare(M: number, N: number, K: number, x: Float32Array, w: Float32Array): Promise<Prepared>;
}

async function idle(): Promise<void> {
  await gpu().device.queue.onSubmittedWorkDone();
}

/** navigator.gpu for libraries that insist on requesting their own adapter: hands them our device. */
export function shareDeviceThroughNavigator(): void {
  const g = gpu();
  const device = g.device;
  const adapter = {
    features: device.features,
    limits: device.limits,
    info: (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo ?? { vendor: '', architecture: '', device: '', description: g.adapterName },
    isFallbackAdapter: false,
    requestDevice: async () => device,
    requestAdapterInfo: async () => adapter.info,
  };
  const fakeGpu = {
    requestAdapter: async () => adapter,
    getPreferredCanvasFormat: () => 'rgba8unorm',
    wgslLanguageFeatures: new Set<string>(),
  };
  const nav = (globalThis as { navigator?: { gpu?: unknown } }).navigator;
  if (nav) {
    try { Object.defineProperty(nav, 'gpu', { value: fakeGpu, configurable: true }); } catch { /* read-only navigator */ }
  } else {
    Object.defineProperty(globalThis, 'navigator', { value: { gpu: fakeGpu, userAgent: 'node', hardwareConcurrency: 2 }, configurable: true, writable: true });
  }
}

// ---- tf.js ------------------------------------------------------------------------------------

export async function tfjsPeer(): Promise<Peer> {
  shareDeviceThroughNavigator(); // the backend checks navigator.gpu before taking our device
  const tf = await import('@tensorflow/tfjs-core');
  const { WebGPUBackend } = await import('@tensorflow/tfjs-backend-webgpu');
  const g = gpu();
  const info = (g.device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo;
  // kernels are registered under the name 'webgpu': replace that backend's factory with ours
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => new WebGPUBackend(g.device, info));
  if (!(await tf.setBackend('webgpu'))) throw new Error('tf.setBackend(webgpu) failed');
  await tf.ready();
  const backend = tf.backend() as unknown as { submitQueue(): void; endComputePassEncoder(): void };
  const version = (tf as unknown as { version_core?: string }).version_core ?? '';
  return {
    name: `tf.js ${version}`.trim(),
    async prepare(M, N, K, x, w) {
      const a = tf.tensor2d(x, [M, K]), b = tf.tensor2d(w, [N, K]);
      const call = () => tf.matMul(a, b, false, true);
      return {
        async time(reps) {
          const outs = [];
          const t0 = performance.now();
          for (let i = 0; i < reps; i++) outs.push(call());
          backend.endComputePassEncoder();
          backend.submitQueue();
          await idle();
          const dt = (performance.now() - t0) / reps;
          for (const o of outs) o.dispose();
          return dt;
        },
        async result() {
          const y = call();
          const d = (await y.data()) as Float32Array;
          y.dispose();
          return d;
        },
        dispose() { a.dispose(); b.dispose(); },
      };
    },
  };
}

// ---- ONNX Runtime Web -------------------------------------------------------------------------

/**
 * ORT's wasm heap is a SharedArrayBuffer and it uploads straight from it; Dawn's Node binding
 * rejects shared views in queue.writeBuffer ("Invalid argument"). Copy those through.
 */
function acceptSharedUploads(queue: GPUQueue): void {
  const q = queue as GPUQueue & { __sharedOk?: boolean };
  if (q.__sharedOk) return;
  const orig = q.writeBuffer.bind(q);
  const patched = (buffer: GPUBuffer, offset: number, data: BufferSource, dataOffset = 0, size?: number) => {
    const view = ArrayBuffer.isView(data) ? data : new Uint8Array(data as ArrayBuffer);
    if (!(view.buffer instanceof SharedArrayBuffer)) return orig(buffer, offset, data as GPUAllowSharedBufferSource, dataOffset, size);
    const el = (view as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1;
    const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
    return orig(buffer, offset, bytes, dataOffset * el, size === undefined ? undefined : size * el);
  };
  Object.defineProperty(q, 'writeBuffer', { value: patched, configurable: true });
  q.__sharedOk = true;
}

let ortKeeper: unknown;

export async function ortPeer(): Promise<Peer> {
  shareDeviceThroughNavigator(); // the EP checks navigator.gpu; env.webgpu.device hands it ours
  const ort = await import('onnxruntime-web/webgpu');
  const req = createRequire(import.meta.url);
  const dist = dirname(req.resolve('onnxruntime-web/webgpu'));
  ort.env.wasm.numThreads = 1; // no worker threads in Node; the GPU does the work anyway
  ort.env.wasm.wasmPaths = pathToFileURL(dist + '/').href;
  ort.env.logLevel = 'error';
  (ort.env.webgpu as unknown as { device: GPUDevice }).device = gpu().device;
  const device = gpu().device;
  acceptSharedUploads(device.queue);
  // ORT destroys the device it was handed when its last session goes away: keep one forever
  ortKeeper ??= await ort.InferenceSession.create(matmulModel(1, 1, 1, new Float32Array(1)), { executionProviders: ['webgpu'] });
  return {
    name: `ORT Web ${ort.env.versions?.web ?? ''} webgpu`.trim(),
    async prepare(M, N, K, x, w) {
      // ONNX MatMul wants B [K,N]: transpose W once (it is a constant of the model)
      const bt = new Float32Array(K * N);
      for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) bt[k * N + n] = w[n * K + k];
      const session = await ort.InferenceSession.create(matmulModel(M, N, K, bt), { executionProviders: ['webgpu'], preferredOutputLocation: 'gpu-buffer', graphOptimizationLevel: 'all' });
      const xbuf = device.createBuffer({ size: x.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
      device.queue.writeBuffer(xbuf, 0, x);
      const input = ort.Tensor.fromGpuBuffer(xbuf as unknown as Parameters<typeof ort.Tensor.fromGpuBuffer>[0], { dataType: 'float32', dims: [M, K] });
      return {
        async time(reps) {
          const outs: { dispose(): void }[] = [];
          const t0 = performance.now();
          for (let i = 0; i < reps; i++) outs.push((await session.run({ A: input })).Y);
          await idle();
          const dt = (performance.now() - t0) / reps;
          for (const o of outs) o.dispose();
          return dt;
        },
        async result() {
          const y = (await session.run({ A: input })).Y;
          const d = (await y.getData(true)) as Float32Array;
          return d;
        },
        dispose() { void session.release(); xbuf.destroy(); },
      };
    },
  };
}

// ---- jax-js -----------------------------------------------------------------------------------

export async function jaxPeer(): Promise<Peer> {
  shareDeviceThroughNavigator();
  const jax = await import('@jax-js/jax');
  const avail = await jax.init('webgpu');
  if (!avail.includes('webgpu')) throw new Error(`jax.init('webgpu') gave only [${avail}]`);
  jax.defaultDevice('webgpu');
  const np = jax.numpy;
  return {
    name: 'jax-js webgpu',
    async prepare(M, N, K, x, w) {
      const a = np.array(x as unknown as number[]).reshape([M, K]);
      const wt = np.array(w as unknown as number[]).reshape([N, K]).transpose(); // [K, N] view
      const f = jax.jit((p: typeof a, q: typeof a) => np.matmul(p, q));
      const call = () => f(a.ref, wt.ref);
      return {
        async time(reps) {
          const outs = [];
          const t0 = performance.now();
          for (let i = 0; i < reps; i++) outs.push(call());
          await jax.blockUntilReady(outs);
          await idle();
          const dt = (performance.now() - t0) / reps;
          for (const o of outs) o.dispose();
          return dt;
        },
        async result() {
          return Float32Array.from((await call().data()) as Float32Array);
        },
        dispose() { a.dispose(); wt.dispose(); f.dispose(); },
      };
    },
  };
}
