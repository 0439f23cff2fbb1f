// One-operator ONNX models, protobuf-encoded by hand (a few fields of onnx.proto3), so the bench
// can run ONNX Runtime Web without an .onnx file or a protobuf dependency.
//   Y[M,N] = MatMul(A[M,K], B[K,N]) with B an initializer (a constant weight, as in a real model);
//   Y = com.microsoft GroupQueryAttention(Q, K, V) (causal GQA, text) and
//   Y = com.microsoft MultiHeadAttention(Q, K, V) (non-causal, one batch entry per vision window).

class Pb {
  private parts: Uint8Array[] = [];
  private len = 0;
  private push(b: Uint8Array) { this.parts.push(b); this.len += b.length; }
  private varint(v: number) {
    const out: number[] = [];
    let x = BigInt(v);
    do {
      let byte = Number(x & 0x7fn);
      x >>= 7n;
      if (x) byte |= 0x80;
      out.push(byte);
    } while (x);
    this.push(Uint8Array.from(out));
  }
  int(field: number, v: number): this { this.varint(field << 3); this.varint(v); return this; }
  bytes(field: number, b: Uint8Array): this { this.varint((field << 3) | 2); this.varint(b.length); this.push(b); return this; }
  str(field: number, s: string): this { return this.bytes(field, new TextEncoder().encode(s)); }
  msg(field: number, m: Pb): this { return this.bytes(field, m.finish()); }
  finish(): Uint8Array {
    const out = new Uint8Array(this.len);
    let o = 0;
    for (const p of this.parts) { out.set(p, o); o += p.length; }
    return out;
  }
}

const FLOAT = 1;
const INT32 = 6;

function valueInfo(name: string, dims: number[], elemType = FLOAT): Pb {
  const shape = new Pb();
  for (const d of dims) shape.msg(1, new Pb().int(1, d)); // TensorShapeProto.dim { dim_value }
  const tensorType = new Pb().int(1, elemType).msg(2, shape); // TypeProto.Tensor { elem_type, shape }
  return new Pb().str(1, name).msg(2, new Pb().msg(1, tensorType)); // ValueInfoProto { name, type }
}

/** AttributeProto { name, i, type = INT } */
const intAttr = (name: string, v: number) => new Pb().str(1, name).int(3, v).int(20, 2);

/** TensorProto of int32 values (dims [] = a scalar) as raw little-endian bytes. */
function int32Init(name: string, dims: number[], values: number[]): Pb {
  const t = new Pb();
  for (const d of dims) t.int(1, d);
  const raw = new Uint8Array(Int32Array.from(values).buffer);
  return t.int(2, INT32).str(8, name).bytes(9, raw);
}

/** ModelProto with the default opset 17 and com.microsoft opset 1 (the contrib attention ops). */
function model(graph: Pb): Uint8Array {
  return new Pb().int(1, 8).str(2, 'patchwork-bench').msg(7, graph)
    .msg(8, new Pb().str(1, '').int(2, 17)).msg(8, new Pb().str(1, 'com.microsoft').int(2, 1)).finish();
}

/**
 * Causal GQA over one sequence of T tokens (no past): inputs Q [1,T,hq·d], K/V [1,T,hkv·d];
 * output Y [1,T,hq·d]. Scale defaults to 1/sqrt(d), as ours. seqlens_k = T − 1 and
 * total_sequence_length = T are initializers.
 */
export function gqaModel(t: number, hq: number, hkv: number, d: number): Uint8Array {
  const node = new Pb();
  for (const n of ['Q', 'K', 'V', '', '', 'seqlens_k', 'total_seq']) node.str(1, n);
  node.str(2, 'Y').str(2, 'present_key').str(2, 'present_value').str(3, 'gqa').str(4, 'GroupQueryAttention')
    .msg(5, intAttr('num_heads', hq)).msg(5, intAttr('kv_num_heads', hkv)).str(7, 'com.microsoft');
  const graph = new Pb().msg(1, node).str(2, 'gqa_only')
    .msg(5, int32Init('seqlens_k', [1], [t - 1])).msg(5, int32Init('total_seq', [], [t]))
    .msg(11, valueInfo('Q', [1, t, hq * d])).msg(11, valueInfo('K', [1, t, hkv * d])).msg(11, valueInfo('V', [1, t, hkv * d]))
    .msg(12, valueInfo('Y', [1, t, hq * d]));
  return model(graph);
}

/**
 * Non-causal multi-head attention over b independent windows of s tokens: Q/K/V [b,s,h·d] →
 * Y [b,s,h·d] (equal windows are a batch, which is what varlen window attention computes).
 */
export function mhaModel(b: number, s: number, h: number, d: number): Uint8Array {
  const node = new Pb().str(1, 'Q').str(1, 'K').str(1, 'V').str(2, 'Y').str(3, 'mha').str(4, 'MultiHeadAttention')
    .msg(5, intAttr('num_heads', h)).str(7, 'com.microsoft');
  const dims = [b, s, h * d];
  const graph = new Pb().msg(1, node).str(2, 'mha_only')
    .msg(11, valueInfo('Q', dims)).msg(11, valueInfo('K', dims)).msg(11, valueInfo('V', dims)).msg(12, valueInfo('Y', dims));
  return model(graph);
}

/** ModelProto bytes for Y = A·B, A [M,K] input, B [K,N] initializer with the given values. */
export function matmulModel(M: number, N: number, K: number, b: Float32Array): Uint8Array {
  if (b.length !== K * N) throw new Error(`matmulModel: B needs ${K * N} values, got ${b.length}`);
  const node = new Pb().str(1, 'A').str(1, 'B').str(2, 'Y').str(3, 'matmul').str(4, 'MatMul');
  const init = new Pb().int(1, K).int(1, N).int(2, FLOAT).str(8, 'B').bytes(9, new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
  const graph = new Pb().msg(1, node).str(2, 'matmul_only').msg(5, init).msg(11, valueInfo('A', [M, K])).msg(12, valueInfo('Y', [M, N]));
  return new Pb().int(1, 8).str(2, 'patchwork-bench').msg(7, graph).msg(8, new Pb().str(1, '').int(2, 17)).finish();
}
