import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeGpu, closeGpu } from './node.ts';
import { dispatch, kernel, flush, grid } from './kernel.ts';
import { empty, fromData, read, readMany, zeros, packBf16, unpackBf16, memory } from './tensor.ts';
import { GpuError, gpu } from './device.ts';

const addCode = /* wgsl */ `
struct Params { n: u32, alpha: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * nwg.x) * 64u + li;
  if (i >= p.n) { return; }
  y[i] = a[i] + p.alpha * b[i];
}`;
const add = kernel('test_add.wgsl', addCode, 'main');

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

describe('gpu runtime', () => {
  it('names the adapter and requests its maxima', () => {
    const g = gpu();
    expect(g.adapterName.length).toBeGreaterThan(0);
    expect(g.limits.maxStorageBuffersPerShaderStage).toBeGreaterThan(8);
    expect(g.limits.maxStorageBufferBindingSize).toBeGreaterThan(128 * 2 ** 20);
  });

  it('dispatches, batches and reads back (odd sizes)', async () => {
    for (const n of [1, 63, 65, 1000]) {
      const a = Float32Array.from({ length: n }, (_, i) => i);
      const b = Float32Array.from({ length: n }, (_, i) => 2 * i + 1);
      const ta = fromData(a, [n]), tb = fromData(b, [n]), ty = empty([n]);
      dispatch(add, [ta, tb, ty], grid(Math.ceil(n / 64)), [n, 0.5], 'uf');
      const got = await read(ty);
      for (let i = 0; i < n; i++) expect(got[i]).toBe(a[i] + 0.5 * b[i]);
      for (const t of [ta, tb, ty]) t.release();
    }
  });

  it('reads several tensors with one map; bf16 round trip', async () => {
    const x = Float32Array.from([1, -2.5, 3.140625, 1e-3, 7]);
    const t16 = fromData(x, [5], 'bf16');
    const z = zeros([3], 'i32');
    const [r16, rz] = await readMany([t16, z]);
    expect(Array.from(r16)).toEqual(Array.from(unpackBf16(packBf16(x), 5)));
    expect(Array.from(rz)).toEqual([0, 0, 0]);
    expect(memory.live).toBeGreaterThan(0);
  });

  it('refuses a tensor above the binding limit with its name, size and limit', () => {
    const lim = gpu().limits.maxStorageBufferBindingSize;
    expect(() => empty([lim / 4 + 1], 'f32', 'model.embed_tokens.weight')).toThrow(/model\.embed_tokens\.weight.*(maxStorageBufferBindingSize|maxBufferSize)/);
  });

  it('reports a shader that fails to compile, naming file and entry', async () => {
    const bad = kernel('broken.wgsl', '@compute @workgroup_size(1) fn main() { let x: f32 = undefined_thing; }', 'main');
    let err: unknown;
    try {
      dispatch(bad, [], 1);
      flush();
      await gpu().device.queue.onSubmittedWorkDone();
      await new Promise((r) => setTimeout(r, 10));
      flush();
    } catch (e) { err = e; }
    expect(err).toBeInstanceOf(GpuError);
    expect(String(err)).toMatch(/broken\.wgsl/);
  });
});
