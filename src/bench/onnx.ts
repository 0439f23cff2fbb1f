// A MatMul-only ONNX model, protobuf-encoded by hand (a few fields of onnx.proto3), so the bench
// can run ONNX Runtime Web without an .onnx file or a protobuf dependency.
//   Y[M,N] = MatMul(A[M,K], B[K,N]) with B an initializer (a constant weight, as in a real model).

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

function valueInfo(name: string, dims: number[]): Pb {
  const shape = new Pb();
  for (const d of dims) shape.msg(1, new Pb().int(1, d)); // TensorShapeProto.dim { dim_value }
  const tensorType = new Pb().int(1, FLOAT).msg(2, shape); // TypeProto.Tensor { elem_type, shape }
  return new Pb().str(1, name).msg(2, new Pb().msg(1, tensorType)); // ValueInfoProto { name, type }
}

/** ModelProto bytes for Y = A·B, A [M,K] input, B [K,N] initializer with the given values. */
export function matmulModel(M: number, N: number, K: number, b: Float32Array): Uint8Array {
  if (b.length !== K * N) throw new Error(`matmulModel: B needs ${K * N} values, got ${b.length}`);
  const node = new Pb().str(1, 'A').str(1, 'B').str(2, 'Y').str(3, 'matmul').str(4, 'MatMul');
  const init = new Pb().int(1, K).int(1, N).int(2, FLOAT).str(8, 'B').bytes(9, new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
  const graph = new Pb().msg(1, node).str(2, 'matmul_only').msg(5, init).msg(11, valueInfo('A', [M, K])).msg(12, valueInfo('Y', [M, N]));
  return new Pb().int(1, 8).str(2, 'patchwork-bench').msg(7, graph).msg(8, new Pb().str(1, '').int(2, 17)).finish();
}
