// Pipeline cache and dispatch. Dispatches are recorded into one pending command encoder and
// submitted together at flush() (before a readback or a CPU write), so a training step is a
// handful of submits, not thousands.
//
// Binding convention for every shader: @group(0) @binding(0) is the uniform params struct (when
// the entry point has params), storage buffers follow at the binding numbers the caller gives.
// Pipelines use layout 'auto', so a dispatch binds exactly what its entry point uses.
import { gpu, GpuError, throwPendingErrors, type Gpu } from './device.ts';

export interface Kernel {
  /** shader file name, for messages */
  file: string;
  code: string;
  entry: string;
  /** override constants (workgroup sizes, tile shapes) */
  constants?: Record<string, number>;
}

export function kernel(file: string, code: string, entry: string, constants?: Record<string, number>): Kernel {
  return { file, code, entry, constants };
}

const modules = new WeakMap<GPUDevice, Map<string, GPUShaderModule>>();
const pipelines = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();
// The compile check of each new pipeline (its error scope and compilation info), so that
// compileChecked can wait for it: a fixed delay misses a slow compiler's report, which then
// surfaces at some later, unrelated flush.
const checks = new WeakMap<GPUDevice, Map<string, Promise<void>>>();

function pipelineKey(k: Kernel): string {
  return `${k.file}|${k.entry}|${k.constants ? JSON.stringify(k.constants) : ''}|${k.code.length}`;
}

export function getPipeline(k: Kernel): GPUComputePipeline {
  const g = gpu();
  let pm = pipelines.get(g.device);
  if (!pm) pipelines.set(g.device, (pm = new Map()));
  const key = pipelineKey(k);
  let p = pm.get(key);
  if (p) return p;
  let mm = modules.get(g.device);
  if (!mm) modules.set(g.device, (mm = new Map()));
  let mod = mm.get(k.code);
  g.device.pushErrorScope('validation');
  if (!mod) {
    mod = g.device.createShaderModule({ code: k.code, label: k.file });
    mm.set(k.code, mod);
  }
  p = g.device.createComputePipeline({ layout: 'auto', label: `${k.file}:${k.entry}`, compute: { module: mod, entryPoint: k.entry, constants: k.constants } });
  const m = mod;
  let cm = checks.get(g.device);
  if (!cm) checks.set(g.device, (cm = new Map()));
  const check = g.device.popErrorScope().then(async (err) => {
    if (!err) return;
    let detail = '';
    try {
      const info = await m.getCompilationInfo();
      detail = info.messages.map((x) => `  ${k.file}:${x.lineNum}:${x.linePos} ${x.type}: ${x.message}`).join('\n');
    } catch { /* compilation info unavailable */ }
    g.pendingErrors.push(`shader ${k.file} entry "${k.entry}" failed to compile: ${err.message}${detail ? '\n' + detail : ''}`);
    pm!.delete(key);
  }, () => undefined); // rejects when the device is lost meanwhile ("Instance dropped"): the loss is reported by device.lost
  // kept until it has run (its errors are then pending), so the map holds only pipelines being checked
  cm.set(key, check);
  void check.then(() => cm.get(key) === check && cm.delete(key));
  pm.set(key, p);
  return p;
}

/** Compile a kernel now and throw a clear error if it does not compile (the variant self-test). */
export async function compileChecked(k: Kernel): Promise<void> {
  getPipeline(k);
  await checks.get(gpu().device)?.get(pipelineKey(k));
  throwPendingErrors();
}

/** Wait until every pipeline made so far has had its compile check (its errors are then pending). */
export async function pipelinesChecked(): Promise<void> {
  await Promise.all(checks.get(gpu().device)?.values() ?? []);
}

// ---- pending work ---------------------------------------------------------------------------

const UNIFORM_STRIDE = 256;
const UNIFORM_SLOTS = 1024;

interface Pending {
  g: Gpu;
  encoder: GPUCommandEncoder;
  pass?: GPUComputePassEncoder;
  uniforms: ArrayBuffer;
  slot: number;
  /** profiling: the op kind of the open pass, and one kind per timestamped pass of this encoder */
  passKind?: OpKind;
  /** flush-mode profiling: the one kind of work recorded in this encoder */
  workKind?: OpKind;
  segments?: OpKind[];
  querySet?: GPUQuerySet;
}
let pending: Pending | undefined;
const uniformBuffers = new WeakMap<GPUDevice, GPUBuffer>();

function uniformBuffer(g: Gpu): GPUBuffer {
  let b = uniformBuffers.get(g.device);
  if (!b) {
    b = g.device.createBuffer({ size: UNIFORM_STRIDE * UNIFORM_SLOTS, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'params' });
    uniformBuffers.set(g.device, b);
  }
  return b;
}

/** The pending encoder, for copies and clears; ends any open compute pass. */
export function encoder(): GPUCommandEncoder {
  const p = getPending();
  if (p.pass) {
    p.pass.end();
    p.pass = undefined;
    p.passKind = undefined;
  }
  return p.encoder;
}

function getPending(): Pending {
  const g = gpu();
  if (pending && pending.g !== g) pending = undefined; // device replaced
  if (!pending) pending = { g, encoder: g.device.createCommandEncoder(), uniforms: new ArrayBuffer(UNIFORM_STRIDE * UNIFORM_SLOTS), slot: 0 };
  return pending;
}

/** Submit everything recorded so far. */
export function flush(): void {
  const p = pending;
  if (!p) return;
  pending = undefined;
  if (p.pass) p.pass.end();
  if (p.slot) p.g.device.queue.writeBuffer(uniformBuffer(p.g), 0, p.uniforms, 0, p.slot * UNIFORM_STRIDE);
  if (profiler) profiler.submits++;
  const read = profiler && p.querySet && p.segments?.length ? resolveTimestamps(p) : undefined;
  p.g.device.queue.submit([p.encoder.finish()]);
  if (read) profiler!.reads.push(read()); // map only after the submit that fills it
  if (profiler?.mode === 'flush' && p.workKind) {
    const prof = profiler, kind = p.workKind, submitted = performance.now();
    prof.waits.push(p.g.device.queue.onSubmittedWorkDone().then(() => ({ kind, submitted, done: performance.now() })));
  }
  p.querySet?.destroy();
  throwPendingErrors();
}

// ---- profiling by op kind ---------------------------------------------------------------------
//
// A step's GPU time split by op kind. With `timestamp-query`, every run of consecutive dispatches
// of one kind becomes its own compute pass with begin/end timestamps (read back at stopProfile);
// without it, the pending work is flushed at every change of kind and each submission is timed
// from its submit (or the previous one's completion) to its onSubmittedWorkDone. Either way the
// time outside every pass (submits, copies, readbacks, CPU work between dispatches) is what is
// left of the wall time: stopProfile reports it as `gaps`.

/** What a dispatch binds: a raw buffer, or a tensor's view of one (gpu/tensor.ts; structural, so this file needs no import of it). */
export type Binding = GPUBuffer | { readonly buffer: GPUBuffer; readonly bindSize: number; readonly name: string };

export type OpKind = 'matmul' | 'attention' | 'norm' | 'lm_head' | 'optimizer' | 'other';
export const OP_KINDS: OpKind[] = ['matmul', 'attention', 'norm', 'lm_head', 'optimizer', 'other'];

/** The op kind of a dispatch: by shader file, and a matmul that reads vocabulary rows counts as lm_head. */
export function opKind(file: string, bindings: (Binding | undefined)[]): OpKind {
  if (/softmax_gather|lm_head|sample/.test(file)) return 'lm_head';
  if (/matmul/.test(file)) {
    for (const b of bindings) if (b && 'name' in b && /embed_tokens|lm_head/.test(b.name)) return 'lm_head';
    return 'matmul';
  }
  if (/attention/.test(file)) return 'attention';
  if (/rmsnorm|layernorm/.test(file)) return 'norm';
  if (/adamw/.test(file)) return 'optimizer';
  return 'other';
}

export interface Profile {
  mode: 'timestamp-query' | 'flushed groups';
  /** GPU ms per kind */
  ms: Record<OpKind, number>;
  dispatches: Record<OpKind, number>;
  /** passes (timestamp mode) or submissions (flush mode) that were timed */
  segments: number;
  /** submits during the profile (each is a CPU↔GPU round trip when followed by a wait) */
  submits: number;
}

interface Profiler {
  mode: 'timestamp' | 'flush';
  dispatches: Record<OpKind, number>;
  reads: Promise<{ kinds: OpKind[]; ns: BigUint64Array }>[];
  waits: Promise<{ kind: OpKind; submitted: number; done: number }>[];
  submits: number;
}
let profiler: Profiler | undefined;
const MAX_SEGMENTS = 1024; // query sets hold at most 4096 queries; 2 per pass

const zeroKinds = (): Record<OpKind, number> => ({ matmul: 0, attention: 0, norm: 0, lm_head: 0, optimizer: 0, other: 0 });

/** Start splitting GPU time by op kind (timestamp queries when the device has them, unless `mode` says otherwise). */
export function startProfile(mode?: 'timestamp' | 'flush'): void {
  flush();
  const has = gpu().device.features.has('timestamp-query');
  const m = mode ?? (has ? 'timestamp' : 'flush');
  if (m === 'timestamp' && !has) throw new GpuError('startProfile: this device has no timestamp-query feature; profile with mode "flush"');
  profiler = { mode: m, dispatches: zeroKinds(), reads: [], waits: [], submits: 0 };
}

/** Stop profiling: flush, wait for the GPU, and return the time per op kind. */
export async function stopProfile(): Promise<Profile> {
  flush();
  const prof = profiler;
  if (!prof) throw new GpuError('stopProfile without startProfile');
  profiler = undefined;
  await gpu().device.queue.onSubmittedWorkDone();
  const ms = zeroKinds();
  let segments = 0;
  if (prof.mode === 'timestamp') {
    for (const r of await Promise.all(prof.reads)) {
      r.kinds.forEach((kind, i) => {
        const dt = Number(r.ns[2 * i + 1] - r.ns[2 * i]) / 1e6;
        if (dt > 0 && dt < 1e7) ms[kind] += dt; // a reset or wrapped counter reads as garbage: skip it
        segments++;
      });
    }
  } else {
    let prevDone = 0;
    for (const w of await Promise.all(prof.waits)) {
      ms[w.kind] += w.done - Math.max(w.submitted, prevDone);
      prevDone = w.done;
      segments++;
    }
  }
  return { mode: prof.mode === 'timestamp' ? 'timestamp-query' : 'flushed groups', ms, dispatches: prof.dispatches, segments, submits: prof.submits };
}

function resolveTimestamps(p: Pending): () => Promise<{ kinds: OpKind[]; ns: BigUint64Array }> {
  const n = p.segments!.length * 2, bytes = n * 8;
  const dev = p.g.device;
  const resolve = dev.createBuffer({ size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC, label: 'profile.resolve' });
  const readBuf = dev.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'profile.read' });
  p.encoder.resolveQuerySet(p.querySet!, 0, n, resolve, 0);
  p.encoder.copyBufferToBuffer(resolve, 0, readBuf, 0, bytes);
  const kinds = p.segments!.slice();
  return () => readBuf.mapAsync(GPUMapMode.READ).then(() => {
    const ns = new BigUint64Array(readBuf.getMappedRange().slice(0));
    readBuf.unmap();
    readBuf.destroy();
    resolve.destroy();
    return { kinds, ns };
  });
}

/** The compute pass for a dispatch of `kind`: under a timestamp profile, one pass per run of one kind. */
function computePass(p: Pending, kind: OpKind | undefined): GPUComputePassEncoder {
  if (!profiler || !kind) {
    if (!p.pass) p.pass = p.encoder.beginComputePass();
    return p.pass;
  }
  if (p.pass && p.passKind === kind) return p.pass;
  if (p.pass) p.pass.end();
  p.passKind = kind;
  if (profiler.mode === 'flush') {
    p.pass = p.encoder.beginComputePass();
    return p.pass;
  }
  p.segments ??= [];
  p.querySet ??= p.g.device.createQuerySet({ type: 'timestamp', count: 2 * MAX_SEGMENTS, label: 'profile.timestamps' });
  const i = p.segments.length;
  p.segments.push(kind);
  p.pass = p.encoder.beginComputePass({ timestampWrites: { querySet: p.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
  return p.pass;
}

export type ParamFormat = string; // one char per value: u = u32, i = i32, f = f32

/**
 * Record one dispatch. `params` fill the uniform struct at binding 0 (`format` gives each
 * value's type, default all u32); `bindings[i]` is bound at binding i+1 (holes skipped).
 */
export function dispatch(
  k: Kernel,
  bindings: (Binding | undefined)[],
  workgroups: number | [number, number?, number?],
  params?: number[],
  format?: ParamFormat,
): void {
  const pipeline = getPipeline(k);
  let p = getPending();
  const kind = profiler ? opKind(k.file, bindings) : undefined;
  if (kind && profiler!.mode === 'flush' && p.workKind && p.workKind !== kind) {
    flush(); // a new kind starts a new timed submission
    p = getPending();
  }
  if ((params && p.slot >= UNIFORM_SLOTS) || (kind && (p.segments?.length ?? 0) >= MAX_SEGMENTS && p.passKind !== kind)) {
    flush();
    p = getPending();
  }
  if (kind) {
    profiler!.dispatches[kind]++;
    p.workKind = kind;
  }
  const entries: GPUBindGroupEntry[] = [];
  if (params) {
    if (params.length * 4 > UNIFORM_STRIDE) throw new GpuError(`${k.file}:${k.entry}: ${params.length} params exceed ${UNIFORM_STRIDE / 4}`);
    const dv = new DataView(p.uniforms, p.slot * UNIFORM_STRIDE, UNIFORM_STRIDE);
    params.forEach((v, i) => {
      const t = format?.[i] ?? 'u';
      if (t === 'f') dv.setFloat32(4 * i, v, true);
      else if (t === 'i') dv.setInt32(4 * i, v, true);
      else dv.setUint32(4 * i, v, true);
    });
    entries.push({ binding: 0, resource: { buffer: uniformBuffer(p.g), offset: p.slot * UNIFORM_STRIDE, size: UNIFORM_STRIDE } });
    p.slot++;
  }
  bindings.forEach((b, i) => {
    if (!b) return;
    const buffer = 'buffer' in b ? b.buffer : b;
    const size = 'buffer' in b ? b.bindSize : undefined;
    entries.push({ binding: i + 1, resource: size === undefined ? { buffer } : { buffer, size } });
  });
  const bindGroup = p.g.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries, label: `${k.file}:${k.entry}` });
  const pass = computePass(p, kind);
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  const [x, y = 1, z = 1] = typeof workgroups === 'number' ? [workgroups] : workgroups;
  const max = p.g.limits.maxComputeWorkgroupsPerDimension ?? 65535;
  if (x > max || y > max || z > max) throw new GpuError(`${k.file}:${k.entry}: dispatch ${x}x${y}x${z} exceeds ${max} workgroups per dimension; use grid()`);
  if (x > 0 && y > 0 && z > 0) pass.dispatchWorkgroups(x, y, z);
}

/**
 * Spread `n` workgroups over x and y so no dimension exceeds the limit. Shaders recover the
 * linear index as `wid.x + wid.y * nwg.x` (num_workgroups builtin) and return when it is >= n.
 */
export function grid(n: number): [number, number] {
  const max = gpu().limits.maxComputeWorkgroupsPerDimension ?? 65535;
  if (n <= max) return [n, 1];
  const y = Math.ceil(n / max);
  return [Math.ceil(n / y), y];
}
