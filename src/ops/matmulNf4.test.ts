// NF4 matmul kernels vs the CPU reference (src/ops/cpu/nf4.ts): in-kernel dequantisation bit for bit
// (bitsandbytes' fixtures and fresh quantisations, double quant on and off, bf16 / f16 / f32
// rounding), forward and backward-input in both variants on odd shapes (K not a multiple of 64, so
// blocks straddle rows), row views, bias, accumulate, and finite differences for dx.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { uploadNf4, type Nf4Data } from '../gpu/nf4.ts';
import { fromData, read } from '../gpu/tensor.ts';
import { readSafetensors, bytesToF32 } from '../model/safetensors.ts';
import { dequantizeNf4, matmulNf4BackwardInputCpu, matmulNf4Cpu, quantizeNf4 } from './cpu/nf4.ts';
import { setMatmulVariant, type MatmulVariant } from './matmul.ts';
import { nf4Variant, setNf4Variant, tuneMatmulNf4 } from './matmulNf4.ts';
import { dequantizeNf4Gpu, matmulNf4, matmulNf4BackwardInput, matmulW, matmulWBackwardInput } from './matmulNf4.ts';
import { expectClose, rand } from './testUtil.ts';
import { loraLinear, loraLinearBackward } from './lora.ts';
import { loraLinearBackwardCpu, loraLinearCpu } from './cpu/lora.ts';

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { setMatmulVariant(undefined); setNf4Variant(undefined); await closeGpu(); });

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
const bf16Values = (x: Float32Array) => Float32Array.from(x, (v) => new Float32Array(new Uint32Array([(new Uint32Array(new Float32Array([v]).buffer)[0] & 0xffff0000) >>> 0]).buffer)[0]);

function fixtureCases(): [string, Nf4Data][] {
  const st = readSafetensors(new Uint8Array(readFileSync(new URL('../model/fixtures/nf4/cases.safetensors', import.meta.url))));
  const T = (n: string) => st.tensors.get(n)!;
  const f32 = (n: string) => bytesToF32(T(n).bytes, T(n).dtype);
  return ['s0', 's1', 's2', 's3', 's4', 's5'].map((tag) => {
    const qs = JSON.parse(new TextDecoder().decode(T(`${tag}.weight.quant_state.bitsandbytes__nf4`).bytes));
    const d: Nf4Data = { shape: qs.shape, packed: T(`${tag}.weight`).bytes.slice(), absmax: new Float32Array(0), blocksize: qs.blocksize, code: f32(`${tag}.weight.quant_map`), dtype: qs.dtype };
    if (qs.nested_offset !== undefined) d.nested = { q: T(`${tag}.weight.absmax`).bytes.slice(), absmax: f32(`${tag}.weight.nested_absmax`), offset: qs.nested_offset, code: f32(`${tag}.weight.nested_quant_map`), blocksize: qs.nested_blocksize };
    else d.absmax = f32(`${tag}.weight.absmax`);
    return [tag, d];
  });
}

describe('NF4 in-kernel dequantisation', () => {
  it.each(fixtureCases())('bitsandbytes fixture %s: GPU == CPU == bitsandbytes, bit for bit', async (_tag, d) => {
    const w = uploadNf4(d, 'w');
    const got = await read(dequantizeNf4Gpu(w));
    expect(bits(got)).toEqual(bits(dequantizeNf4(d)));
    w.release();
  });

  it.each([['float32', false], ['float16', true], ['bfloat16', true], ['float32', true]] as const)('fresh quantisation, dtype %s, double quant %s: bit for bit', async (dtype, dq) => {
    const x = bf16Values(rand(61 * 67, 7, 0.3));
    const d = quantizeNf4(x, [61, 67], { doubleQuant: dq, dtype });
    const w = uploadNf4(d, 'w');
    expect(bits(await read(dequantizeNf4Gpu(w)))).toEqual(bits(dequantizeNf4(d)));
    const v = w.rows(13, 20, 'w.rows');
    expect(bits(await read(dequantizeNf4Gpu(v)))).toEqual(bits(dequantizeNf4(d).subarray(13 * 67, 33 * 67)));
    w.release();
  });
});

// [M, N, K]: odd everything, K < 64, K not a multiple of 64, one row, > 256 blocks (nested blocks)
const SHAPES: [number, number, number][] = [[5, 7, 3], [1, 1, 1], [37, 53, 29], [20, 70, 100], [3, 150, 130], [65, 66, 67]];
const VARIANTS: MatmulVariant[] = ['reg', 'tiled'];

describe.each(VARIANTS)('NF4 matmul (%s)', (variant) => {
  beforeAll(() => { setMatmulVariant(variant); setNf4Variant(variant); });

  it.each(SHAPES)('forward y = x·Wᵀ + b and backward dx = dy·W, M=%i N=%i K=%i', async (M, N, K) => {
    for (const dq of [false, true]) {
      const d = quantizeNf4(bf16Values(rand(N * K, N + K, 0.2)), [N, K], { doubleQuant: dq });
      const w = uploadNf4(d, 'w');
      const x = rand(M * K, M, 1), b = rand(N, 3, 1), dy = rand(M * N, 5, 1);
      const tx = fromData(x, [M, K]), tb = fromData(b, [N]), tdy = fromData(dy, [M, N]);
      const y = matmulNf4(tx, w, { bias: tb });
      expectClose(await read(y), matmulNf4Cpu(x, d, M, { bias: b }), `y dq=${dq}`);
      const dx = matmulNf4BackwardInput(tdy, w);
      expectClose(await read(dx), matmulNf4BackwardInputCpu(dy, d, M), `dx dq=${dq}`);
      // accumulate + alpha
      matmulNf4BackwardInput(tdy, w, { out: dx, accumulate: true, alpha: 0.5 });
      const ref = matmulNf4BackwardInputCpu(dy, d, M);
      expectClose(await read(dx), ref.map((v) => 1.5 * v), `dx accumulate dq=${dq}`);
      for (const t of [tx, tb, tdy, y, dx, w]) t.release();
    }
  });

  it('row views (the vision qkv split) address the right rows, through matmulW', async () => {
    const C = 24, M = 9; // 24·24 = 576 = 9 blocks: each part starts mid-block when C·C % 64 != 0 is not needed
    const d = quantizeNf4(bf16Values(rand(3 * C * (C + 1), 11, 0.2)), [3 * C, C + 1], { doubleQuant: true });
    const w = uploadNf4(d, 'qkv');
    const x = rand(M * (C + 1), 12), dy = rand(M * C, 13);
    const tx = fromData(x, [M, C + 1]), tdy = fromData(dy, [M, C]);
    for (let j = 0; j < 3; j++) {
      const part = w.rows(j * C, C, `part${j}`);
      expectClose(await read(matmulW(tx, part)), matmulNf4Cpu(x, d, M, { rows: [j * C, C] }), `y part ${j}`);
      expectClose(await read(matmulWBackwardInput(tdy, part)), matmulNf4BackwardInputCpu(dy, d, M, { rows: [j * C, C] }), `dx part ${j}`);
    }
    w.release();
  });

  it('finite differences: dx of L = Σ g ⊙ (x·Wᵀ)', async () => {
    const M = 3, N = 11, K = 70;
    const d = quantizeNf4(bf16Values(rand(N * K, 21, 0.2)), [N, K], { doubleQuant: true });
    const w = uploadNf4(d, 'w');
    const x = rand(M * K, 22), g = rand(M * N, 23);
    const L = async (xs: Float32Array) => {
      const t = fromData(xs, [M, K]);
      const y = await read(matmulNf4(t, w));
      t.release();
      let s = 0;
      for (let i = 0; i < y.length; i++) s += g[i] * y[i];
      return s;
    };
    const dx = await read(matmulNf4BackwardInput(fromData(g, [M, N]), w));
    const eps = 1e-2;
    for (const i of [0, 5, 69, 70, 139, 209]) {
      const xp = x.slice(), xm = x.slice();
      xp[i] += eps; xm[i] -= eps;
      const fd = ((await L(xp)) - (await L(xm))) / (2 * eps);
      expect(Math.abs(fd - dx[i]), `dx[${i}] ${dx[i]} vs fd ${fd}`).toBeLessThan(2e-3 * (1 + Math.abs(fd)));
    }
    w.release();
  });
});

describe.each(VARIANTS)('LoRA linear on an NF4 base (QLoRA) (%s)', (variant) => {
  beforeAll(() => { setMatmulVariant(variant); setNf4Variant(variant); });
  it.each([[7, 45, 70, 4], [13, 64, 33, 8]] as const)('T=%i out=%i in=%i r=%i: forward and backward vs CPU, with dropout', async (T, outF, inF, r) => {
    const d = quantizeNf4(bf16Values(rand(outF * inF, 31, 0.2)), [outF, inF], { doubleQuant: true });
    const w = uploadNf4(d, 'base');
    const x = rand(T * inF, 32), a = rand(r * inF, 33, 0.3), b = rand(outF * r, 34, 0.3), bias = rand(outF, 35), dy = rand(T * outF, 36);
    const l = { weight: w, bias: fromData(bias, [outF]), loraA: fromData(a, [r, inF]), loraB: fromData(b, [outF, r]), scaling: 2 };
    const drop = { p: 0.25, seed: 9, stream: 3 };
    const cpu = { w: dequantizeNf4(d), bias, a, b, scaling: 2, inF, outF, r };
    const tx = fromData(x, [T, inF]);
    const f = loraLinear(tx, l, { dropout: drop });
    const ref = loraLinearCpu(x, T, cpu, drop);
    expectClose(await read(f.y), ref.y, 'y');
    const g = loraLinearBackward(fromData(dy, [T, outF]), tx, f.xa!, l, { dropout: drop });
    const rg = loraLinearBackwardCpu(dy, x, T, cpu, drop);
    expectClose(await read(g.dx!), rg.dx, 'dx');
    expectClose(await read(g.dA), rg.dA, 'dA');
    expectClose(await read(g.dB), rg.dB, 'dB');
    w.release();
  });
});

describe('NF4 variant choice', () => {
  it('tuning times both variants and remembers one; the override wins', async () => {
    setNf4Variant(undefined);
    const t = await tuneMatmulNf4({ m: 16, n: 32, k: 64, reps: 1, force: true });
    expect(Number.isFinite(t.ms.reg) && Number.isFinite(t.ms.tiled)).toBe(true);
    expect(nf4Variant()).toBe(t.variant);
    setNf4Variant('reg');
    expect(nf4Variant()).toBe('reg');
    setNf4Variant(undefined);
  });
});
