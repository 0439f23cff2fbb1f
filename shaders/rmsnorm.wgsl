// RMSNorm over the last dim: y = w · x · rstd, rstd = 1/sqrt(mean(x²) + eps), f32 accumulation.
// One workgroup per row. The weight is bound as u32 words: f32 bits, or packed bf16 (frozen base
// weights stay bf16 and are widened here) when W_BF16.
// Backward: dx = rstd · (g − x̂ · mean(g · x̂)) with g = w · dy, x̂ = x · rstd (rstd kept from the
// forward); dweight[j] = Σ_rows dy · x̂ (one thread per column, rows in order: deterministic).

override W_BF16: bool = false;
const WG = 64u;

struct Params { rows: u32, dim: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read> rstd_in: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;
@group(0) @binding(8) var<storage, read_write> dw: array<f32>;

var<workgroup> red: array<f32, WG>;

fn weight(i: u32) -> f32 {
  if (W_BF16) {
    let word = w[i >> 1u];
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u));
  }
  return bitcast<f32>(w[i]);
}

// Sum over the workgroup (tree, so f32 error grows with log2(WG), not WG).
fn wg_sum(v: f32, li: u32) -> f32 {
  red[li] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (li < s) { red[li] = red[li] + red[li + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; } // uniform per workgroup, so the barriers below stay uniform
  let base = row * p.dim;
  var ss = 0.0;
  for (var i = li; i < p.dim; i += WG) { let v = x[base + i]; ss += v * v; }
  let r = inverseSqrt(wg_sum(ss, li) / f32(p.dim) + p.eps);
  for (var i = li; i < p.dim; i += WG) { y[base + i] = weight(i) * (x[base + i] * r); }
  if (li == 0u) { rstd[row] = r; }
}

@compute @workgroup_size(WG)
fn backward_dx(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.dim;
  let r = rstd_in[row];
  var acc = 0.0;
  for (var i = li; i < p.dim; i += WG) { acc += weight(i) * dy[base + i] * (x[base + i] * r); }
  let c = wg_sum(acc, li) / f32(p.dim);
  for (var i = li; i < p.dim; i += WG) {
    dx[base + i] = r * (weight(i) * dy[base + i] - (x[base + i] * r) * c);
  }
}

@compute @workgroup_size(WG)
fn backward_dw(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  if (j >= p.dim) { return; }
  var acc = 0.0;
  for (var r = 0u; r < p.rows; r++) { acc += dy[r * p.dim + j] * (x[r * p.dim + j] * rstd_in[r]); }
  dw[j] = acc;
}
