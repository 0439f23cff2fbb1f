// Rotary embedding, transformers' rotate-half convention, for both the 2-D vision rotary and the
// 3-D M-RoPE (they differ only in how the cos/sin tables are built, on the CPU in f64):
//   out = x·cos + rotate_half(x)·sin, rotate_half(v) = concat(−v[D/2:], v[:D/2]).
// cos/sin are half tables [rows, D/2] (HF's emb = concat(freqs, freqs) repeats them), shared by
// every head. One thread per (row, head, j < D/2) rotates the pair (j, j + D/2):
//   out[j] = x[j]·c − x[j+D/2]·s,  out[j+D/2] = x[j+D/2]·c + x[j]·s.
// The backward is the transpose, a rotation by −angle. Input and output rows have their own
// element offset and stride, so q/k can be read from (and dq/dk written into) a fused qkv buffer.

struct Params { rows: u32, heads: u32, half: u32, in_off: u32, in_stride: u32, out_off: u32, out_stride: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> cos_t: array<f32>;
@group(0) @binding(3) var<storage, read> sin_t: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn rotate(wid: vec3u, nwg: vec3u, li: u32, sign: f32) {
  let idx = (wid.x + wid.y * nwg.x) * 64u + li;
  if (idx >= p.rows * p.heads * p.half) { return; }
  let j = idx % p.half;
  let rh = idx / p.half;
  let h = rh % p.heads;
  let r = rh / p.heads;
  let c = cos_t[r * p.half + j];
  let s = sign * sin_t[r * p.half + j];
  let i = p.in_off + r * p.in_stride + h * 2u * p.half + j;
  let o = p.out_off + r * p.out_stride + h * 2u * p.half + j;
  let x1 = x[i];
  let x2 = x[i + p.half];
  out[o] = x1 * c - x2 * s;
  out[o + p.half] = x2 * c + x1 * s;
}

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  rotate(wid, nwg, li, 1.0);
}

// dx = dy·cos + rotate_halfᵀ(dy)·sin, rotate_halfᵀ(v) = concat(v[D/2:], −v[:D/2]).
@compute @workgroup_size(64)
fn backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  rotate(wid, nwg, li, -1.0);
}
