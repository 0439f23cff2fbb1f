import { nodeGpu } from './src/gpu/node.ts';
import { dispatch, kernel, grid } from './src/gpu/kernel.ts';
import { empty, fromData, read } from './src/gpu/tensor.ts';
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
await nodeGpu();
for (let it = 0; it < 300; it++) {
  for (const n of [1, 63, 65, 1000]) {
    const ta = fromData(new Float32Array(n).fill(1), [n]), tb = fromData(new Float32Array(n).fill(2), [n]), ty = empty([n]);
    dispatch(add, [ta, tb, ty], grid(Math.ceil(n / 64)), [n, 0.5], 'uf');
    const got = await read(ty);
    if (got[0] !== 2) throw new Error('bad');
    ta.release(); tb.release(); ty.release();
  }
  (globalThis as any).gc?.(); if (it % 10 === 0) console.log(it, Date.now());
}
console.log('done');
