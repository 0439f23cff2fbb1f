// AdamW as torch.optim.AdamW (decoupled weight decay, bias correction; amsgrad/maximize off), and
// the global grad norm of torch.nn.utils.clip_grad_norm_, kept on the GPU:
//   sumsq_partial (one dispatch per grad tensor) -> partials [2·k]: (Σg², bits: 1 non-finite, 2 non-zero)
//   finalize (one workgroup, fixed order: deterministic) -> state [8]:
//     0 total norm, 1 clip scale = min(1, max_norm/(norm + 1e−6)) or 1,
//     2 gradient non-finite (a NaN/Inf gradient, or Σg² overflowing f32: torch's error_if_nonfinite),
//     3 Σg², 4 update non-finite (written by adamw_check), 5 gradient vanished (every gradient is
//     exactly 0 although the caller says the loss has a gradient: a saturated forward), 6, 7 zero.
//   adamw_check (one dispatch per param) computes the update without storing it and raises state[4]
//     if a new param, m or v would be NaN/Inf; adamw (one per param) then stores it unless state
//     2, 4 or 5 is raised. Two passes over p, g, m, v instead of a scratch copy: no extra memory
//     (a scratch would cost 3× the LoRA bytes), and the optimizer's traffic is tiny next to the
//     forward/backward. Both passes run the same `update` on the same inputs, so the commit stores
//     exactly what the check saw. A discarded step is all-or-nothing across every tensor.
//   adamw reads the clip scale from state, so clipping costs no readback and no extra pass.
// The per-step scalars (bias corrections, step size) are computed by the caller in double, as
// torch does. Op order follows torch's: p·(1−lr·wd); m.lerp_(g, 1−β1); v·β2 + ((1−β2)·g)·g;
// denom = sqrt(v)/sqrt(bc2) + eps; p + (−lr/bc1 · m)/denom.

struct Params {
  n: u32, off: u32, count: u32, max_norm: f32,
  decay: f32, lerp_w: f32, beta2: f32, omb2: f32,
  nss: f32, bc2s: f32, eps: f32, skip: u32,
  flags: u32, // finalize: 1 = the loss has a gradient, so all-zero gradients mean a saturated forward
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad_bits: array<u32>; // NaN/Inf tested on the bits: compilers may assume floats are finite
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<storage, read> partials_in: array<f32>;
@group(0) @binding(4) var<storage, read_write> state_out: array<f32>;
@group(0) @binding(5) var<storage, read> state: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad_rw: array<f32>;
@group(0) @binding(7) var<storage, read_write> param: array<f32>;
@group(0) @binding(8) var<storage, read> grad: array<f32>;
@group(0) @binding(9) var<storage, read_write> m: array<f32>;
@group(0) @binding(10) var<storage, read_write> v: array<f32>;
@group(0) @binding(11) var<storage, read_write> state_flags: array<atomic<u32>>; // adamw_check: the state, as bits

fn non_finite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u; }

const WG = 256u;
const PER_THREAD = 16u; // a workgroup covers WG·PER_THREAD elements

var<workgroup> red_s: array<f32, WG>;
var<workgroup> red_b: array<u32, WG>;

fn reduce(s: f32, b: u32, li: u32) {
  red_s[li] = s;
  red_b[li] = b;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k = k >> 1u) {
    if (li < k) { red_s[li] = red_s[li] + red_s[li + k]; red_b[li] = red_b[li] | red_b[li + k]; }
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn sumsq_partial(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let wg = wid.x + wid.y * nwg.x;
  if (wg >= p.count) { return; } // grid() may round up: never write another tensor's slot
  let base = wg * WG * PER_THREAD;
  var s = 0.0;
  var bad = 0u;
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG + li;
    if (i < p.n) {
      let bits = grad_bits[i];
      if ((bits & 0x7f800000u) == 0x7f800000u) { bad = bad | 1u; }
      if ((bits & 0x7fffffffu) != 0u) { bad = bad | 2u; }
      let g = bitcast<f32>(bits);
      s += g * g;
    }
  }
  reduce(s, bad, li);
  if (li == 0u) {
    partials[2u * (p.off + wg)] = red_s[0];
    partials[2u * (p.off + wg) + 1u] = f32(red_b[0]);
  }
}

@compute @workgroup_size(WG)
fn finalize(@builtin(local_invocation_index) li: u32) {
  var s = 0.0;
  var bad = 0u;
  for (var k = li; k < p.count; k += WG) {
    s += partials_in[2u * k];
    bad = bad | u32(partials_in[2u * k + 1u]);
  }
  reduce(s, bad, li);
  if (li == 0u) {
    let ss = red_s[0];
    let norm = sqrt(ss);
    var scale = 1.0;
    if (p.max_norm > 0.0) { scale = min(1.0, p.max_norm / (norm + 1e-6)); }
    let b = red_b[0];
    let nonfin = (b & 1u) != 0u || non_finite(ss);
    state_out[0] = norm;
    state_out[1] = scale;
    state_out[2] = select(0.0, 1.0, nonfin);
    state_out[3] = ss;
    state_out[4] = 0.0;
    state_out[5] = select(0.0, 1.0, (p.flags & 1u) != 0u && (b & 2u) == 0u && !nonfin);
    state_out[6] = 0.0;
    state_out[7] = 0.0;
  }
}

fn index(wid: vec3u, nwg: vec3u, li: u32) -> u32 { return (wid.x + wid.y * nwg.x) * WG + li; }

// grad *= clip scale (torch's clip_grad_norm_ in place; adamw applies the scale itself anyway)
@compute @workgroup_size(WG)
fn clip(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i >= p.n) { return; }
  grad_rw[i] = grad_rw[i] * state[1];
}

// new (param, m, v) of element i for a clip scale
fn update(i: u32, scale: f32) -> vec3f {
  let g = grad[i] * scale;
  let pd = param[i] * p.decay;
  let m0 = m[i];
  let d = g - m0;
  var mi: f32;
  if (p.lerp_w < 0.5) { mi = m0 + p.lerp_w * d; } else { mi = g - d * (1.0 - p.lerp_w); }
  let vi = v[i] * p.beta2 + (p.omb2 * g) * g;
  let denom = sqrt(vi) / p.bc2s + p.eps;
  return vec3f(pd + (p.nss * mi) / denom, mi, vi);
}

@compute @workgroup_size(WG)
fn adamw_check(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i >= p.n) { return; }
  let u = update(i, bitcast<f32>(atomicLoad(&state_flags[1])));
  if (non_finite(u.x) || non_finite(u.y) || non_finite(u.z)) { atomicOr(&state_flags[4], 0x3f800000u); } // 1.0
}

@compute @workgroup_size(WG)
fn adamw(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i >= p.n) { return; }
  if (p.skip == 1u && (state[2] != 0.0 || state[4] != 0.0 || state[5] != 0.0)) { return; }
  let u = update(i, state[1]);
  param[i] = u.x;
  m[i] = u.y;
  v[i] = u.z;
}
