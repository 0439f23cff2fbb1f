// The one WebGPU device the engine uses, in a page, a Worker or Node. Requests the adapter's
// maxima: the defaults (128 MiB bindings, 8 storage buffers per stage) are far too small.

export class GpuError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GpuError';
  }
}

export interface Gpu {
  device: GPUDevice;
  /** "vendor architecture description" as the adapter reports it */
  adapterName: string;
  limits: Record<string, number>;
  features: string[];
  hasF16: boolean;
  /** the device has `subgroups` (requested when the adapter offers it; variants still need the self-test) */
  hasSubgroups: boolean;
  /** set once the device is lost; every later call throws naming the reason */
  lostReason?: string;
  /** validation / compile errors noticed asynchronously, thrown at the next sync point */
  pendingErrors: string[];
}

let current: Gpu | undefined;
const lostListeners = new Set<(reason: string) => void>();

export function gpu(): Gpu {
  if (!current) throw new GpuError('No WebGPU device yet: call initGpu() first.');
  if (current.lostReason) throw new GpuError(`The GPU device was lost (${current.lostReason}). Reload the model to continue; saved checkpoints are kept.`);
  return current;
}

export function hasGpu(): boolean {
  return current !== undefined && !current.lostReason;
}

/** Called with the reason when the device is lost (driver reset, tab backgrounded too long, destroy()). */
export function onDeviceLost(fn: (reason: string) => void): () => void {
  lostListeners.add(fn);
  return () => lostListeners.delete(fn);
}

function limitsOf(l: GPUSupportedLimits): Record<string, number> {
  const out: Record<string, number> = {};
  // Limits are getters on the prototype: for..in finds them in browsers, the prototype walk in Dawn.
  const keys = new Set<string>();
  for (const k in l) keys.add(k);
  for (let p = Object.getPrototypeOf(l); p && p !== Object.prototype; p = Object.getPrototypeOf(p)) for (const k of Object.getOwnPropertyNames(p)) keys.add(k);
  for (const k of keys) {
    const v = (l as unknown as Record<string, unknown>)[k];
    if (typeof v === 'number') out[k] = v;
  }
  return out;
}

export interface InitOptions {
  powerPreference?: GPUPowerPreference;
  /** ask for shader-f16 when the adapter has it (default true) */
  f16?: boolean;
  /** ask for subgroups when the adapter has it (default true) */
  subgroups?: boolean;
}

/** Create the device. `api` is `navigator.gpu` in a browser, or Dawn's GPU object in Node. */
export async function initGpu(api: GPU | undefined, opts: InitOptions = {}): Promise<Gpu> {
  if (!api) {
    throw new GpuError(
      'WebGPU is not available here (navigator.gpu is undefined). Use a recent Chrome or Edge (113+), or Firefox/Safari with WebGPU enabled; on Linux Chrome start with --enable-unsafe-webgpu.',
    );
  }
  const adapter = await api.requestAdapter({ powerPreference: opts.powerPreference ?? 'high-performance' });
  if (!adapter) throw new GpuError('WebGPU is present but no GPU adapter was found (requestAdapter returned null). Check that hardware acceleration is on, or that a Vulkan/Metal/D3D12 driver is installed.');
  const limits = limitsOf(adapter.limits);
  const requiredFeatures: GPUFeatureName[] = [];
  const hasF16 = opts.f16 !== false && adapter.features.has('shader-f16');
  if (hasF16) requiredFeatures.push('shader-f16');
  const hasSubgroups = opts.subgroups !== false && adapter.features.has('subgroups' as GPUFeatureName);
  if (hasSubgroups) requiredFeatures.push('subgroups' as GPUFeatureName);
  // timestamps let the bench split a step's GPU time by op kind
  if (adapter.features.has('timestamp-query')) requiredFeatures.push('timestamp-query');
  const device = await adapter.requestDevice({ requiredLimits: limits, requiredFeatures });
  const info = adapter.info ?? ({} as GPUAdapterInfo);
  const adapterName = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') || 'unknown adapter';
  const g: Gpu = { device, adapterName, limits: limitsOf(device.limits), features: [...device.features], hasF16: device.features.has('shader-f16'), hasSubgroups: device.features.has('subgroups'), pendingErrors: [] };
  device.lost.then((e) => {
    g.lostReason = `${e.reason}: ${e.message || 'no message'}`;
    for (const fn of lostListeners) fn(g.lostReason);
  });
  device.addEventListener('uncapturederror', (ev) => {
    g.pendingErrors.push((ev as GPUUncapturedErrorEvent).error.message);
  });
  current?.device.destroy();
  current = g;
  return g;
}

/** Throw (once) any asynchronous GPU error recorded since the last check. */
export function throwPendingErrors(): void {
  const g = current;
  if (!g) return;
  if (g.lostReason) gpu();
  if (g.pendingErrors.length) {
    const msgs = g.pendingErrors.splice(0);
    throw new GpuError(`GPU error: ${msgs.join('\n')}`);
  }
}

export function destroyGpu(): void {
  current?.device.destroy();
  current = undefined;
}

/** For tests: simulate a lost device. */
export function loseDeviceForTest(): void {
  current?.device.destroy();
}
