// safetensors: 8-byte little-endian header length, a JSON header, then raw little-endian data.
// The reader validates everything a malicious or truncated file could get wrong and names the
// file and tensor in its error; the writer produces files Hugging Face loads unchanged.
import { f16ToF32 } from '../gpu/bf16.ts';

export type StDType = 'F32' | 'F16' | 'BF16' | 'I32' | 'I64' | 'U8' | 'I8' | 'U16' | 'I16' | 'U32' | 'F64' | 'BOOL';

export const DTYPE_BYTES: Record<StDType, number> = {
  F64: 8, I64: 8, F32: 4, I32: 4, U32: 4, F16: 2, BF16: 2, I16: 2, U16: 2, U8: 1, I8: 1, BOOL: 1,
};

export interface StTensorInfo {
  name: string;
  dtype: StDType;
  shape: number[];
  /** absolute byte range in the file, end exclusive */
  begin: number;
  end: number;
}

export interface StHeader {
  tensors: Map<string, StTensorInfo>;
  metadata: Record<string, string>;
  /** byte offset of the data section (8 + header length) */
  dataStart: number;
}

export class SafetensorsError extends Error {
  constructor(file: string, what: string) {
    super(`${file}: ${what}`);
    this.name = 'SafetensorsError';
  }
}

/** Bytes needed to read the header: call with the first 8 bytes of the file. */
export function headerLength(first8: Uint8Array, file = '<safetensors>'): number {
  if (first8.byteLength < 8) throw new SafetensorsError(file, `file is ${first8.byteLength} bytes, too short for a safetensors header`);
  const dv = new DataView(first8.buffer, first8.byteOffset, 8);
  const n = Number(dv.getBigUint64(0, true));
  if (n < 2 || n > 100_000_000) throw new SafetensorsError(file, `header length ${n} is not plausible (corrupt or not a safetensors file)`);
  return n;
}

/**
 * Parse and validate a header. `headerBytes` are bytes 8..8+n; `fileSize` (when known) bounds the
 * offsets. Checks: JSON object, known dtypes, integer shapes, byte length = numel x dtype size,
 * offsets inside the data section, no two tensors overlapping.
 */
export function parseHeader(headerBytes: Uint8Array, fileSize: number | undefined, file = '<safetensors>'): StHeader {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(headerBytes));
  } catch (e) {
    throw new SafetensorsError(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new SafetensorsError(file, 'header is not a JSON object');
  const dataStart = 8 + headerBytes.byteLength;
  const dataSize = fileSize === undefined ? Infinity : fileSize - dataStart;
  const tensors = new Map<string, StTensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof v !== 'object' || v === null) throw new SafetensorsError(file, '__metadata__ is not an object');
      metadata = Object.fromEntries(Object.entries(v as object).map(([k, s]) => [k, String(s)]));
      continue;
    }
    const info = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = info?.dtype as StDType;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) throw new SafetensorsError(file, `tensor "${name}" has unknown dtype ${JSON.stringify(info?.dtype)}`);
    const shape = info.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) throw new SafetensorsError(file, `tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
    const off = info.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isInteger(d) && d >= 0) || off[1] < off[0]) {
      throw new SafetensorsError(file, `tensor "${name}" has invalid data_offsets ${JSON.stringify(off)}`);
    }
    const numel = (shape as number[]).reduce((a, b) => a * b, 1);
    const want = numel * DTYPE_BYTES[dtype];
    if (off[1] - off[0] !== want) {
      throw new SafetensorsError(file, `tensor "${name}" ${dtype}[${shape.join(',')}] needs ${want} bytes but data_offsets span ${off[1] - off[0]}`);
    }
    if (off[1] > dataSize) {
      throw new SafetensorsError(file, `tensor "${name}" ends at data byte ${off[1]} but the file has only ${dataSize} data bytes (truncated?)`);
    }
    tensors.set(name, { name, dtype, shape: shape as number[], begin: dataStart + off[0], end: dataStart + off[1] });
  }
  const sorted = [...tensors.values()].filter((t) => t.end > t.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].begin < sorted[i - 1].end) throw new SafetensorsError(file, `tensors "${sorted[i - 1].name}" and "${sorted[i].name}" overlap`);
  }
  return { tensors, metadata, dataStart };
}

export interface StTensor extends StTensorInfo {
  /** raw little-endian bytes (a view into the file buffer) */
  bytes: Uint8Array;
}

export interface StFile {
  file: string;
  metadata: Record<string, string>;
  tensors: Map<string, StTensor>;
}

/** Read a whole safetensors file held in memory. */
export function readSafetensors(buf: ArrayBuffer | Uint8Array, file = '<safetensors>'): StFile {
  const u8 = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  const n = headerLength(u8.subarray(0, 8), file);
  if (8 + n > u8.byteLength) throw new SafetensorsError(file, `header of ${n} bytes runs past the end of the ${u8.byteLength}-byte file`);
  const h = parseHeader(u8.subarray(8, 8 + n), u8.byteLength, file);
  const tensors = new Map<string, StTensor>();
  for (const [name, t] of h.tensors) tensors.set(name, { ...t, bytes: u8.subarray(t.begin, t.end) });
  return { file, metadata: h.metadata, tensors };
}

/** Decode raw bytes of any float dtype to f32. */
export function bytesToF32(bytes: Uint8Array, dtype: StDType): Float32Array {
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
      return out;
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, true);
      return out;
    case 'BF16': {
      const u32 = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u32[i] = dv.getUint16(2 * i, true) << 16;
      return out;
    }
    case 'F16':
      for (let i = 0; i < n; i++) out[i] = f16ToF32(dv.getUint16(2 * i, true));
      return out;
    case 'I32':
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(4 * i, true);
      return out;
    default:
      throw new Error(`cannot decode ${dtype} as float`);
  }
}

export function bytesToI32(bytes: Uint8Array, dtype: StDType): Int32Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === 'I32') {
    const out = new Int32Array(bytes.byteLength / 4);
    for (let i = 0; i < out.length; i++) out[i] = dv.getInt32(4 * i, true);
    return out;
  }
  if (dtype === 'I64') {
    const out = new Int32Array(bytes.byteLength / 8);
    for (let i = 0; i < out.length; i++) out[i] = Number(dv.getBigInt64(8 * i, true));
    return out;
  }
  throw new Error(`cannot decode ${dtype} as int`);
}

export interface StWriteTensor {
  name: string;
  dtype: StDType;
  shape: number[];
  data: Float32Array | Int32Array | Uint16Array | Uint8Array;
}

/**
 * The header block of a safetensors file (8-byte length + JSON padded with spaces to 8 bytes) for
 * tensors written in the given order, as safetensors' own writer lays it out. The data of the
 * tensors follows it back to back, so a writer can stream them after it.
 */
export function safetensorsHeader(tensors: { name: string; dtype: StDType; shape: number[] }[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let off = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + n] };
    off += n;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8 !== 0) json += ' ';
  const hb = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + hb.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.byteLength), true);
  out.set(hb, 8);
  return out;
}

/** Serialize tensors (sorted by name, 8-byte aligned data start), as safetensors' own writer does. */
export function writeSafetensors(tensors: StWriteTensor[], metadata?: Record<string, string>): Uint8Array {
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const t of sorted) {
    const n = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== n) throw new Error(`writeSafetensors: "${t.name}" ${t.dtype}[${t.shape}] needs ${n} bytes, got ${t.data.byteLength}`);
  }
  const head = safetensorsHeader(sorted, metadata);
  const out = new Uint8Array(head.byteLength + sorted.reduce((a, t) => a + t.data.byteLength, 0));
  out.set(head, 0);
  let p = head.byteLength;
  for (const t of sorted) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), p);
    p += t.data.byteLength;
  }
  return out;
}
