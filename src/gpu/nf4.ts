// NF4 weights on the GPU: the bitsandbytes 4-bit layout, kept as it is stored.
//
// Host form (Nf4Data, what src/ops/cpu/nf4.ts quantises and src/model/quant.ts reads from a
// checkpoint): `packed` bytes, two codes per byte, element 2i in the HIGH nibble of byte i and
// element 2i+1 in the low nibble (bitsandbytes' `(q[::2] << 4) | q[1::2]`); f32 absmax per block of
// `blocksize` elements of the flattened tensor, or with double quantisation one 8-bit code per
// block plus f32 nested absmax per 256 blocks and an offset.
//
// GPU form (Nf4Tensor): the packed bytes uploaded as they are, read as u32 words (little-endian,
// so element i is nibble ((i >> 1) & 3) * 8 + (i & 1 ? 0 : 4) of word i >> 3); the absmax as f32,
// or the 8-bit codes as bytes in u32 words + the f32 nested absmax; one small f32 map buffer (the
// 16-value code, then the 256-value nested map). 0.5 byte per weight + 4 (or ~1) byte per 64.
//
// An Nf4Tensor is a Tensor (so it travels through GpuWeights and the model code like any weight;
// `dtype` is 'u32', which the f32/bf16 GEMM rejects) whose shape is the logical [N, K]. Row views
// (`rows`) share the storage and carry an element offset: the vision qkv [3C, C] is quantised as
// one tensor (as bitsandbytes does) and used as its q, k, v row blocks.
import { GpuError } from './device.ts';
import { fromData, Tensor } from './tensor.ts';

export type Nf4DType = 'bfloat16' | 'float16' | 'float32';

export interface Nf4Nested {
  /** one 8-bit code of (absmax - offset) per 4-bit block */
  q: Uint8Array;
  /** f32 absmax of each block of `blocksize` (256) codes */
  absmax: Float32Array;
  /** f32 mean of the 4-bit blocks' absmax */
  offset: number;
  /** the 8-bit map (bitsandbytes' dynamic map; a checkpoint's nested_quant_map) */
  code: Float32Array;
  blocksize: number;
}

/** A quantised tensor as bitsandbytes' QuantState holds it, plus the packed codes. */
export interface Nf4Data {
  shape: number[];
  /** ((numel + 1) >> 1) bytes, two codes each, first element in the high nibble */
  packed: Uint8Array;
  /** f32 absmax per block (no double quant); empty when `nested` */
  absmax: Float32Array;
  nested?: Nf4Nested;
  blocksize: number;
  /** the 16-value map (the NF4 code; a checkpoint's quant_map) */
  code: Float32Array;
  /** QuantState.dtype: what dequantize_4bit rounds its f32 products to */
  dtype: Nf4DType;
}

/** The 4-bit code of element i of packed bytes. */
export function nf4CodeAt(packed: Uint8Array, i: number): number {
  const b = packed[i >> 1];
  return i & 1 ? b & 15 : b >> 4;
}

/** Bytes as little-endian u32 words (zero-padded to a multiple of 4). */
export function bytesToWords(b: Uint8Array): Uint32Array {
  const out = new Uint32Array(Math.max(1, Math.ceil(b.length / 4)));
  new Uint8Array(out.buffer).set(b);
  return out;
}

/** The 4-bit code of element i of the GPU words (what the kernel reads). */
export function nf4CodeOfWords(words: Uint32Array, i: number): number {
  return (words[i >> 3] >>> (((i >> 1) & 3) * 8 + (i & 1 ? 0 : 4))) & 15;
}

/** GPU bytes of an NF4 tensor of `numel` values (codes + absmax; the maps are a few hundred bytes). */
export function nf4Bytes(numel: number, blocksize = 64, nested = false): number {
  const blocks = Math.ceil(numel / blocksize);
  const words = (n: number) => Math.ceil(n / 4) * 4;
  return words((numel + 1) >> 1) + (nested ? words(blocks) + 4 * Math.ceil(blocks / 256) : 4 * blocks);
}

/** The buffers of one quantised tensor, shared by its row views; released once. */
export class Nf4Storage {
  private released = false;
  constructor(
    readonly codes: Tensor,
    /** f32 absmax [blocks], or (nested) the 8-bit codes as u32 words */
    readonly absmax: Tensor,
    /** f32 nested absmax (nested only) */
    readonly nestedAbsmax: Tensor | undefined,
    /** f32 [16 + 256]: the 4-bit map, then the nested 8-bit map */
    readonly qmap: Tensor,
    readonly numel: number,
    readonly blocksize: number,
    readonly nested: { offset: number; blocksize: number } | undefined,
    readonly dtype: Nf4DType,
  ) {
    if (blocksize & (blocksize - 1) || (nested && nested.blocksize & (nested.blocksize - 1))) throw new GpuError(`NF4 block sizes must be powers of two, got ${blocksize}${nested ? ` / ${nested.blocksize}` : ''}`);
  }
  get bytes(): number {
    return [this.codes, this.absmax, this.nestedAbsmax, this.qmap].reduce((s, t) => s + (t ? t.bindSize : 0), 0);
  }
  release(): void {
    if (this.released) return;
    this.released = true;
    for (const t of [this.codes, this.absmax, this.nestedAbsmax, this.qmap]) t?.release();
  }
}

export class Nf4Tensor extends Tensor {
  constructor(
    readonly storage: Nf4Storage,
    shape: number[],
    name: string,
    /** first element of this view in the flattened stored tensor */
    readonly elemOffset = 0,
  ) {
    super(storage.codes.buffer, shape, 'u32', name);
    if (elemOffset + this.numel > storage.numel) throw new GpuError(`NF4 view "${name}" [${shape}] at ${elemOffset} runs past the ${storage.numel} stored elements`);
  }
  /** this view's share of the storage bytes (whole views sum to the storage) */
  override get bindSize(): number {
    return Math.round((this.storage.bytes * this.numel) / this.storage.numel);
  }
  override view(shape: number[], name = this.name): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== this.numel) throw new GpuError(`view of "${this.name}" [${this.shape}] as [${shape}]: element counts differ`);
    return new Nf4Tensor(this.storage, shape, name, this.elemOffset);
  }
  /** rows [r0, r0 + n) of this [rows, K] weight, sharing the storage */
  rows(r0: number, n: number, name: string): Nf4Tensor {
    const K = this.shape[this.shape.length - 1];
    return new Nf4Tensor(this.storage, [n, K], name, this.elemOffset + r0 * K);
  }
  override release(): void {
    if (this.released) return;
    this.released = true;
    this.storage.release();
  }
}

export function isNf4(t: Tensor): t is Nf4Tensor {
  return t instanceof Nf4Tensor;
}

/** Upload a quantised tensor. */
export function uploadNf4(d: Nf4Data, name: string): Nf4Tensor {
  const numel = d.shape.reduce((a, b) => a * b, 1);
  const blocks = Math.ceil(numel / d.blocksize);
  if (d.packed.length !== (numel + 1) >> 1) throw new GpuError(`NF4 "${name}": ${d.packed.length} code bytes for ${numel} elements (need ${(numel + 1) >> 1})`);
  if (d.code.length !== 16) throw new GpuError(`NF4 "${name}": quant_map has ${d.code.length} values, need 16`);
  const qm = new Float32Array(16 + 256);
  qm.set(d.code);
  if (d.nested) qm.set(d.nested.code.subarray(0, 256), 16);
  const made: Tensor[] = [];
  const up = (data: Float32Array | Uint32Array, shape: number[], dtype: 'f32' | 'u32', n: string) => {
    const t = fromData(data, shape, dtype, n);
    made.push(t);
    return t;
  };
  try {
    const words = bytesToWords(d.packed);
    const codes = up(words, [words.length], 'u32', `${name}.codes`);
    let absmax: Tensor, nabs: Tensor | undefined;
    if (d.nested) {
      if (d.nested.q.length !== blocks) throw new GpuError(`NF4 "${name}": ${d.nested.q.length} absmax codes for ${blocks} blocks`);
      const aw = bytesToWords(d.nested.q);
      absmax = up(aw, [aw.length], 'u32', `${name}.absmax`);
      nabs = up(d.nested.absmax, [d.nested.absmax.length], 'f32', `${name}.nested_absmax`);
    } else {
      if (d.absmax.length !== blocks) throw new GpuError(`NF4 "${name}": ${d.absmax.length} absmax values for ${blocks} blocks`);
      absmax = up(d.absmax, [blocks], 'f32', `${name}.absmax`);
    }
    const qmap = up(qm, [qm.length], 'f32', `${name}.quant_map`);
    const st = new Nf4Storage(codes, absmax, nabs, qmap, numel, d.blocksize, d.nested ? { offset: d.nested.offset, blocksize: d.nested.blocksize } : undefined, d.dtype);
    return new Nf4Tensor(st, [...d.shape], name);
  } catch (e) {
    for (const t of made) t.release();
    throw e;
  }
}
