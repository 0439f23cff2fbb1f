// NF4 CPU reference vs bitsandbytes' own algorithm (scripts/nf4_reference.py's fixtures): the
// dequantisation is bit-exact, the quantisation gives identical codes and absmax, with and
// without double quantisation, on odd shapes (numel not a multiple of 64, odd numel, > 256 blocks).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { readSafetensors, bytesToF32, type StTensor } from '../model/safetensors.ts';
import { DYNAMIC_MAP, NF4_CODE, dequantizeNf4, nf4Absmax, quantizeNf4, type Nf4Data } from './cpu/nf4.ts';

const st = readSafetensors(new Uint8Array(readFileSync(new URL('../model/fixtures/nf4/cases.safetensors', import.meta.url))));
const T = (name: string): StTensor => {
  const t = st.tensors.get(name);
  if (!t) throw new Error(`fixture has no ${name}`);
  return t;
};
const f32 = (name: string) => bytesToF32(T(name).bytes, T(name).dtype);
const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
const TAGS = ['s0', 's1', 's2', 's3', 's4', 's5'];

/** The fixture's QuantState as our Nf4Data (what the checkpoint loader builds). */
function fromFixture(tag: string): Nf4Data {
  const qs = JSON.parse(new TextDecoder().decode(T(`${tag}.weight.quant_state.bitsandbytes__nf4`).bytes));
  const am = T(`${tag}.weight.absmax`);
  const d: Nf4Data = { shape: qs.shape, packed: T(`${tag}.weight`).bytes.slice(), absmax: new Float32Array(0), blocksize: qs.blocksize, code: f32(`${tag}.weight.quant_map`), dtype: qs.dtype };
  if (qs.nested_offset !== undefined) d.nested = { q: am.bytes.slice(), absmax: f32(`${tag}.weight.nested_absmax`), offset: qs.nested_offset, code: f32(`${tag}.weight.nested_quant_map`), blocksize: qs.nested_blocksize };
  else d.absmax = f32(`${tag}.weight.absmax`);
  return d;
}

describe('NF4 CPU reference vs bitsandbytes', () => {
  it('code books: NF4 map and the dynamic 8-bit map are bit-identical', () => {
    expect(bits(NF4_CODE)).toEqual(bits(f32('nf4_code')));
    expect(bits(DYNAMIC_MAP)).toEqual(bits(f32('dynamic_map')));
  });

  it.each(TAGS)('%s: dequantisation bit-exact (bf16 and f32)', (tag) => {
    const d = fromFixture(tag);
    expect(bits(dequantizeNf4(d, 'bfloat16'))).toEqual(bits(f32(`${tag}.dequant_bf16`)));
    expect(bits(dequantizeNf4(d, 'float32'))).toEqual(bits(f32(`${tag}.dequant_f32`)));
  });

  it.each(TAGS)('%s: quantisation gives identical codes and absmax', (tag) => {
    const ref = fromFixture(tag);
    const x = f32(`${tag}.input`);
    const ours = quantizeNf4(x, T(`${tag}.input`).shape, { doubleQuant: !!ref.nested });
    expect(ours.packed.length).toBe(T(`${tag}.weight`).shape[0]);
    expect(Array.from(ours.packed)).toEqual(Array.from(ref.packed));
    if (ref.nested) {
      expect(ours.nested!.offset).toBe(ref.nested.offset);
      expect(Array.from(ours.nested!.q)).toEqual(Array.from(ref.nested.q));
      expect(bits(ours.nested!.absmax)).toEqual(bits(ref.nested.absmax));
    } else expect(bits(ours.absmax)).toEqual(bits(ref.absmax));
    expect(bits(nf4Absmax(ours))).toEqual(bits(nf4Absmax(ref)));
  });
});
