// SwiGLU: y = silu(gate) · up, silu(g) = g · σ(g).
// Backward: dup = dy · silu(g); dgate = dy · up · σ(g) · (1 + g · (1 − σ(g))).

struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dgate: array<f32>;
@group(0) @binding(6) var<storage, read_write> dup: array<f32>;

// exp argument clamped: WGSL does not promise infinities, and σ(−80) ≈ 2e−35 is already 0 for us.
fn sigmoid(g: f32) -> f32 { return 1.0 / (1.0 + exp(min(-g, 80.0))); }

fn index(wid: vec3u, nwg: vec3u, li: u32) -> u32 { return (wid.x + wid.y * nwg.x) * 256u + li; }

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i >= p.n) { return; }
  let g = gate[i];
  y[i] = g * sigmoid(g) * up[i];
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i >= p.n) { return; }
  let g = gate[i];
  let s = sigmoid(g);
  let d = dy[i];
  dup[i] = d * (g * s);
  dgate[i] = d * up[i] * s * (1.0 + g * (1.0 - s));
}
