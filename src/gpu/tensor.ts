// Tensor = a GPU buffer + shape + dtype. bf16 is packed two per u32 (element i in the low half of
// word i/2 when i is even, high half when odd) and widened in the kernel with `bits << 16`.
// Buffers come from a size-keyed pool so a training loop allocates nothing after its first step.
import { gpu, GpuError } from './device.ts';
import { encoder, flush } from './kernel.ts';
import { f32ToBf16Bits } from './bf16.ts';

export type DType = 'f32' | 'bf16' | 'i32' | 'u32';

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function byteSize(shape: readonly number[], dtype: DType): number {
  const n = numel(shape);
  return dtype === 'bf16' ? Math.ceil(n / 2) * 4 : n * 4;
}

const USAGE = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

// ---- pool -----------------------------------------------------------------------------------

/** Round up so that similar sizes share buffers: 256 B granularity, then 1/8 of a power of two. */
function bucket(bytes: number): number {
  const b = Math.max(256, Math.ceil(bytes / 256) * 256);
  if (b <= 65536) return b;
  const step = 2 ** (Math.floor(Math.log2(b)) - 3);
  return Math.ceil(b / step) * step;
}

const free = new Map<number, GPUBuffer[]>();
let poolDevice: GPUDevice | undefined;
export const memory = { live: 0, pooled: 0, peak: 0 };

function acquire(bytes: number, name: string): GPUBuffer {
  const g = gpu();
  if (poolDevice !== g.device) {
    free.clear();
    memory.live = memory.pooled = 0;
    poolDevice = g.device;
  }
  const maxBuf = g.limits.maxBufferSize, maxBind = g.limits.maxStorageBufferBindingSize;
  if (bytes > maxBuf) throw new GpuError(`Tensor "${name}" needs ${fmtBytes(bytes)} but this adapter's maxBufferSize is ${fmtBytes(maxBuf)}; split it across buffers.`);
  if (bytes > maxBind) throw new GpuError(`Tensor "${name}" needs ${fmtBytes(bytes)} but this adapter's maxStorageBufferBindingSize is ${fmtBytes(maxBind)}; split it across buffers.`);
  let size = bucket(bytes);
  if (size > maxBind) size = Math.ceil(bytes / 4) * 4;
  const list = free.get(size);
  if (list?.length) {
    memory.pooled -= size;
    memory.live += size;
    return list.pop()!;
  }
  const buf = g.device.createBuffer({ size, usage: USAGE(), label: name });
  memory.live += size;
  memory.peak = Math.max(memory.peak, memory.live + memory.pooled);
  return buf;
}

function giveBack(buf: GPUBuffer): void {
  if (poolDevice && buf.size) {
    const l = free.get(buf.size) ?? [];
    l.push(buf);
    free.set(buf.size, l);
    memory.live -= buf.size;
    memory.pooled += buf.size;
  }
}

/** Destroy every pooled (free) buffer, e.g. after unloading a model. */
export function trimPool(): void {
  for (const l of free.values()) for (const b of l) b.destroy();
  free.clear();
  memory.pooled = 0;
}

export function fmtBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}

// ---- Tensor ---------------------------------------------------------------------------------

export class Tensor {
  released = false;
  constructor(
    readonly buffer: GPUBuffer,
    readonly shape: number[],
    readonly dtype: DType,
    readonly name: string,
  ) {}
  get numel(): number {
    return numel(this.shape);
  }
  /** bytes of real data (the pooled buffer may be larger) */
  get bindSize(): number {
    return byteSize(this.shape, this.dtype);
  }
  /** same buffer, new shape (element count must match) */
  view(shape: number[], name = this.name): Tensor {
    if (numel(shape) !== this.numel) throw new GpuError(`view of "${this.name}" [${this.shape}] as [${shape}]: element counts differ`);
    return new Tensor(this.buffer, shape, this.dtype, name);
  }
  /** return the buffer to the pool; the tensor must not be used afterwards */
  release(): void {
    if (this.released) return;
    this.released = true;
    giveBack(this.buffer);
  }
}

/** Uninitialised tensor from the pool. */
export function empty(shape: number[], dtype: DType = 'f32', name = 'tensor'): Tensor {
  return new Tensor(acquire(byteSize(shape, dtype), name), shape, dtype, name);
}

export function zeros(shape: number[], dtype: DType = 'f32', name = 'tensor'): Tensor {
  const t = empty(shape, dtype, name);
  encoder().clearBuffer(t.buffer, 0, Math.ceil(t.bindSize / 4) * 4);
  return t;
}

/** f32 values -> packed bf16 words (round to nearest even). */
export function packBf16(x: Float32Array): Uint32Array {
  const out = new Uint32Array(Math.ceil(x.length / 2));
  for (let i = 0; i < x.length; i++) out[i >> 1] |= f32ToBf16Bits(x[i]) << (16 * (i & 1));
  return out;
}

/** raw bf16 bits (e.g. straight from a safetensors file) -> packed words */
export function packBf16Bits(bits: Uint16Array): Uint32Array {
  const out = new Uint32Array(Math.ceil(bits.length / 2));
  new Uint16Array(out.buffer).set(bits); // little-endian: element 2i in the low half
  return out;
}

export function unpackBf16(words: Uint32Array, n: number): Float32Array {
  const out = new Float32Array(n);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < n; i++) u[i] = i & 1 ? words[i >> 1] & 0xffff0000 : words[i >> 1] << 16;
  return out;
}

/** Upload. f32 data with dtype 'bf16' is rounded; Uint16Array with 'bf16' is taken as raw bits. */
export function fromData(
  data: Float32Array | Int32Array | Uint32Array | Uint16Array | number[],
  shape: number[],
  dtype: DType = data instanceof Int32Array ? 'i32' : data instanceof Uint32Array ? 'u32' : data instanceof Uint16Array ? 'bf16' : 'f32',
  name = 'tensor',
): Tensor {
  const n = numel(shape);
  const arr = Array.isArray(data) ? (dtype === 'i32' ? Int32Array.from(data) : dtype === 'u32' ? Uint32Array.from(data) : Float32Array.from(data)) : data;
  if (arr.length !== n) throw new GpuError(`Tensor "${name}": ${arr.length} values for shape [${shape}] (${n} elements)`);
  const t = empty(shape, dtype, name);
  write(t, arr);
  return t;
}

/** Overwrite a tensor's contents from the CPU. */
export function write(t: Tensor, data: Float32Array | Int32Array | Uint32Array | Uint16Array): void {
  let words: ArrayBufferView;
  if (t.dtype === 'bf16') words = data instanceof Uint16Array ? packBf16Bits(data) : data instanceof Uint32Array ? data : packBf16(data as Float32Array);
  else words = data;
  // CPU writes are queue operations that run before any unsubmitted dispatch: submit those first
  // so a recycled buffer is never overwritten while recorded work still reads it.
  flush();
  const bytes = Math.ceil(words.byteLength / 4) * 4;
  if (bytes === words.byteLength) gpu().device.queue.writeBuffer(t.buffer, 0, words.buffer, words.byteOffset, bytes);
  else {
    const padded = new Uint8Array(bytes);
    padded.set(new Uint8Array(words.buffer, words.byteOffset, words.byteLength));
    gpu().device.queue.writeBuffer(t.buffer, 0, padded);
  }
}

type Readback = Float32Array | Int32Array | Uint32Array;

/** Read several tensors with one submit and one map: the only stall a training step needs. */
export async function readMany(ts: Tensor[]): Promise<Readback[]> {
  const g = gpu();
  const total = ts.reduce((s, t) => s + Math.ceil(t.bindSize / 4) * 4, 0);
  const staging = g.device.createBuffer({ size: Math.max(4, total), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'readback' });
  const enc = encoder();
  let off = 0;
  const offs: number[] = [];
  for (const t of ts) {
    if (t.released) throw new GpuError(`read of released tensor "${t.name}"`);
    const b = Math.ceil(t.bindSize / 4) * 4;
    offs.push(off);
    if (b) enc.copyBufferToBuffer(t.buffer, 0, staging, off, b);
    off += b;
  }
  flush();
  try {
    await staging.mapAsync(GPUMapMode.READ);
  } catch (e) {
    gpu(); // throws a clear message when the device was lost
    throw new GpuError(`readback failed: ${(e as Error).message}`);
  }
  const mapped = staging.getMappedRange().slice(0);
  staging.unmap();
  staging.destroy();
  return ts.map((t, i) => {
    const words = new Uint32Array(mapped, offs[i], Math.ceil(t.bindSize / 4));
    if (t.dtype === 'bf16') return unpackBf16(words, t.numel);
    if (t.dtype === 'f32') return new Float32Array(mapped, offs[i], t.numel).slice();
    if (t.dtype === 'i32') return new Int32Array(mapped, offs[i], t.numel).slice();
    return words.slice(0, t.numel);
  });
}

export async function read(t: Tensor): Promise<Float32Array> {
  const [r] = await readMany([t]);
  return r instanceof Float32Array ? r : Float32Array.from(r);
}

export async function readI32(t: Tensor): Promise<Int32Array> {
  const [r] = await readMany([t]);
  return r instanceof Int32Array ? r : Int32Array.from(r);
}
