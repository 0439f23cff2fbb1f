// LoRA dropout without a mask tensor: element i of a module's input is kept when a counter-based
// hash of (seed, stream, i) clears a threshold, so the backward redraws the very same mask from
// the seed alone. The hash is xxHash32 (seed 0) of the three little-endian u32 words; the same
// function lives in src/ops/cpu/dropout.ts for the CPU reference.
//   apply:      out = keep ? x · scale : 0               (scale = 1 / (1 − p), as nn.Dropout)
//   apply_add:  acc += keep ? x · scale : 0              (backward: dx of the LoRA branch)

struct Params { n: u32, seed: u32, stream: u32, threshold: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> acc: array<f32>;

const P2: u32 = 2246822519u;
const P3: u32 = 3266489917u;
const P4: u32 = 668265263u;
const P5: u32 = 374761393u;

fn rotl(v: u32, r: u32) -> u32 { return (v << r) | (v >> (32u - r)); }

fn word(h: u32, w: u32) -> u32 { return rotl(h + w * P3, 17u) * P4; }

fn hash3(a: u32, b: u32, c: u32) -> u32 {
  var h = word(word(word(P5 + 12u, a), b), c);
  h = (h ^ (h >> 15u)) * P2;
  h = (h ^ (h >> 13u)) * P3;
  return h ^ (h >> 16u);
}

// keep with probability 1 − threshold / 2^24
fn keep(i: u32) -> bool { return (hash3(p.seed, p.stream, i) >> 8u) >= p.threshold; }

fn index(wid: vec3u, nwg: vec3u, li: u32) -> u32 { return (wid.x + wid.y * nwg.x) * 256u + li; }

@compute @workgroup_size(256)
fn apply(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i >= p.n) { return; }
  out[i] = select(0.0, x[i] * p.scale, keep(i));
}

@compute @workgroup_size(256)
fn apply_add(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i >= p.n) { return; }
  acc[i] = acc[i] + select(0.0, x[i] * p.scale, keep(i));
}
