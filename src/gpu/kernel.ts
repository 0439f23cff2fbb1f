// Pipeline cache and dispatch. Dispatches are recorded into one pending command encoder and
// submitted together at flush() (before a readback or a CPU write), so a training step is a
// handful of submits, not thousands.
//
// Binding convention for every shader: @group(0) @binding(0) is the uniform params struct (when
// the entry point has params), storage buffers follow at the binding numbers the caller gives.
// Pipelines use layout 'auto', so a dispatch binds exactly what its entry point uses.
import { gpu, GpuError, throwPendingErrors, type Gpu } from './device.ts';
import type { Tensor } from './tensor.ts';

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
  void g.device.popErrorScope().then(async (err) => {
    if (!err) return;
    let detail = '';
    try {
      const info = await m.getCompilationInfo();
      detail = info.messages.map((x) => `  ${k.file}:${x.lineNum}:${x.linePos} ${x.type}: ${x.message}`).join('\n');
    } catch { /* compilation info unavailable */ }
    g.pendingErrors.push(`shader ${k.file} entry "${k.entry}" failed to compile: ${err.message}${detail ? '\n' + detail : ''}`);
    pm!.delete(key);
  }, () => undefined); // rejects when the device is lost meanwhile ("Instance dropped"): the loss is reported by device.lost
  pm.set(key, p);
  return p;
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
  p.g.device.queue.submit([p.encoder.finish()]);
  throwPendingErrors();
}

export type ParamFormat = string; // one char per value: u = u32, i = i32, f = f32

/**
 * Record one dispatch. `params` fill the uniform struct at binding 0 (`format` gives each
 * value's type, default all u32); `bindings[i]` is bound at binding i+1 (holes skipped).
 */
export function dispatch(
  k: Kernel,
  bindings: (Tensor | GPUBuffer | undefined)[],
  workgroups: number | [number, number?, number?],
  params?: number[],
  format?: ParamFormat,
): void {
  const pipeline = getPipeline(k);
  let p = getPending();
  if (params && p.slot >= UNIFORM_SLOTS) {
    flush();
    p = getPending();
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
  if (!p.pass) p.pass = p.encoder.beginComputePass();
  p.pass.setPipeline(pipeline);
  p.pass.setBindGroup(0, bindGroup);
  const [x, y = 1, z = 1] = typeof workgroups === 'number' ? [workgroups] : workgroups;
  const max = p.g.limits.maxComputeWorkgroupsPerDimension ?? 65535;
  if (x > max || y > max || z > max) throw new GpuError(`${k.file}:${k.entry}: dispatch ${x}x${y}x${z} exceeds ${max} workgroups per dimension; use grid()`);
  if (x > 0 && y > 0 && z > 0) p.pass.dispatchWorkgroups(x, y, z);
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
