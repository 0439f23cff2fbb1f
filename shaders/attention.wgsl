// Attention, forward and backward. q [Lq,Hq,D], k/v rows [*,Hkv,D] (row stride Hkv·D, so a KV
// cache with capacity > Lk is read in place), query head h reads kv head h / (Hq/Hkv).
// Two key-range rules share the same row code:
//   causal: query i sits at position i + q_off and sees keys [0, min(i + q_off + 1, lk));
//   varlen: query i sees the cu_seqlens segment [cu[s], cu[s+1]) holding it (cut at i+1 when causal).
// One thread owns one (row, head): D lives in registers, keys stream through an online softmax.
// No workgroup memory and no barriers (both costly on SwiftShader); a shared-memory K/V tile is
// the obvious next step on real GPUs.
// Backward recomputes P = exp(scale·q·k − lse) from the forward's logsumexp and uses
// delta_i = Σ_d dy·out (computed first); dk/dv are per query head then summed over the group in
// a fixed order, so everything is deterministic (no float atomics).

// Rows are read as VT = vec4 (4 head-dim elements at a time) when D % 4 == 0; the wrapper swaps
// in the scalar VT = f32 lines otherwise. MAXD is the register capacity per thread (a variant >= D).
alias VT = vec4<f32>;
const VW: u32 = 4u;
fn vdot(a: VT, b: VT) -> f32 { return dot(a, b); }
const MAXD: u32 = 128u;
const MAXV: u32 = MAXD / VW;
const BK: u32 = 16u;    // keys per block of the online softmax (one rescale per block)
const NEG: f32 = -3.0e38;
const WG: u32 = 64u;
override DV: u32 = 32u; // head dim / VW, fixed per pipeline so loops have constant trip counts

struct Params {
  lq: u32,      // query rows
  lk: u32,      // valid key rows
  hq: u32,
  hkv: u32,
  d: u32,
  scale: f32,
  q_off: u32,   // causal: position of query row 0
  nseg: u32,    // varlen: number of segments S (cu has S+1 entries)
  causal: u32,  // varlen: also mask j > i
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<VT>;
@group(0) @binding(2) var<storage, read> k: array<VT>;
@group(0) @binding(3) var<storage, read> v: array<VT>;
@group(0) @binding(4) var<storage, read_write> out: array<VT>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read> cu: array<i32>;
@group(0) @binding(7) var<storage, read> dy: array<VT>;
@group(0) @binding(8) var<storage, read_write> ld: array<f32>;   // (lse, delta) per (row, head)
@group(0) @binding(9) var<storage, read_write> dq: array<VT>;
@group(0) @binding(10) var<storage, read_write> dkh: array<VT>; // [lk, hq, d] per query head
@group(0) @binding(11) var<storage, read_write> dvh: array<VT>;
@group(0) @binding(12) var<storage, read_write> dk: array<VT>;  // [lk, hkv, d]
@group(0) @binding(13) var<storage, read_write> dv: array<VT>;
// the forward's outputs as backward inputs: read-only, so they may alias other inputs
@group(0) @binding(14) var<storage, read> out_in: array<VT>;
@group(0) @binding(15) var<storage, read> lse_in: array<f32>;

fn thread_index(wid: vec3u, nwg: vec3u, li: u32) -> u32 {
  return (wid.x + wid.y * nwg.x) * WG + li;
}

fn kv_head(h: u32) -> u32 {
  return h / (p.hq / p.hkv);
}

// Segment [cu[s], cu[s+1]) holding row i, or an empty range.
fn segment(i: u32) -> vec2u {
  let ii = i32(i);
  if (p.nseg == 0u || ii < cu[0] || ii >= cu[p.nseg]) { return vec2u(0u, 0u); }
  var lo = 0u;
  var hi = p.nseg; // invariant cu[lo] <= i < cu[hi]
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (cu[mid] <= ii) { lo = mid; } else { hi = mid; }
  }
  return vec2u(u32(cu[lo]), u32(cu[hi]));
}

fn varlen_keys(i: u32) -> vec2u {
  let s = segment(i);
  if (p.causal != 0u && s.y > s.x) { return vec2u(s.x, min(s.y, i + 1u)); }
  return s;
}

fn causal_keys(i: u32) -> vec2u {
  return vec2u(0u, min(p.lk, i + p.q_off + 1u));
}

// ---- forward -----------------------------------------------------------------------------

fn fwd_row(i: u32, h: u32, r: vec2u) {
  let g = kv_head(h);
  let qo = (i * p.hq + h) * DV;
  var qr: array<VT, MAXV>;
  var acc: array<VT, MAXV>;
  for (var d = 0u; d < DV; d++) { qr[d] = q[qo + d] * p.scale; acc[d] = VT(0.0); }
  var m = NEG;
  var l = 0.0;
  var sc: array<f32, BK>;
  for (var j0 = r.x; j0 < r.y; j0 += BK) {
    let nb = min(BK, r.y - j0);
    var bm = NEG;
    for (var t = 0u; t < nb; t++) {
      let ko = ((j0 + t) * p.hkv + g) * DV;
      var s = 0.0;
      for (var d = 0u; d < DV; d++) { s += vdot(qr[d], k[ko + d]); }
      sc[t] = s;
      bm = max(bm, s);
    }
    if (bm > m) {
      let c = exp(m - bm);
      l *= c;
      for (var d = 0u; d < DV; d++) { acc[d] *= c; }
      m = bm;
    }
    for (var t = 0u; t < nb; t++) {
      let pj = exp(sc[t] - m);
      l += pj;
      let vo = ((j0 + t) * p.hkv + g) * DV;
      for (var d = 0u; d < DV; d++) { acc[d] += pj * v[vo + d]; }
    }
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var d = 0u; d < DV; d++) { out[qo + d] = acc[d] * inv; }
  lse[i * p.hq + h] = select(0.0, m + log(l), l > 0.0);
}

@compute @workgroup_size(WG)
fn attn_fwd_causal(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = thread_index(wid, nwg, li);
  if (t >= p.lq * p.hq) { return; }
  let i = t / p.hq;
  fwd_row(i, t % p.hq, causal_keys(i));
}

@compute @workgroup_size(WG)
fn attn_fwd_varlen(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = thread_index(wid, nwg, li);
  if (t >= p.lq * p.hq) { return; }
  let i = t / p.hq;
  fwd_row(i, t % p.hq, varlen_keys(i));
}

// ---- backward ----------------------------------------------------------------------------

// ld = (lse, delta = Σ_d dy·out) per (row, head): packed so that the dk/dv pass stays within 8
// storage bindings.
@compute @workgroup_size(WG)
fn attn_bwd_delta(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = thread_index(wid, nwg, li);
  if (t >= p.lq * p.hq) { return; }
  let o = t * DV;
  var s = 0.0;
  for (var d = 0u; d < DV; d++) { s += vdot(dy[o + d], out_in[o + d]); }
  ld[2u * t] = lse_in[t];
  ld[2u * t + 1u] = s;
}

fn dq_row(i: u32, h: u32, r: vec2u) {
  let g = kv_head(h);
  let row = i * p.hq + h;
  let qo = row * DV;
  var qr: array<VT, MAXV>;
  var dyr: array<VT, MAXV>;
  var acc: array<VT, MAXV>;
  for (var d = 0u; d < DV; d++) { qr[d] = q[qo + d] * p.scale; dyr[d] = dy[qo + d]; acc[d] = VT(0.0); }
  let L = ld[2u * row];
  let delta = ld[2u * row + 1u];
  for (var j = r.x; j < r.y; j++) {
    let ko = (j * p.hkv + g) * DV;
    var s = 0.0;
    var dp = 0.0;
    for (var d = 0u; d < DV; d++) { s += vdot(qr[d], k[ko + d]); dp += vdot(dyr[d], v[ko + d]); }
    let ds = exp(s - L) * (dp - delta);
    for (var d = 0u; d < DV; d++) { acc[d] += ds * k[ko + d]; }
  }
  for (var d = 0u; d < DV; d++) { dq[qo + d] = acc[d] * p.scale; }
}

@compute @workgroup_size(WG)
fn attn_bwd_dq_causal(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = thread_index(wid, nwg, li);
  if (t >= p.lq * p.hq) { return; }
  let i = t / p.hq;
  dq_row(i, t % p.hq, causal_keys(i));
}

@compute @workgroup_size(WG)
fn attn_bwd_dq_varlen(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = thread_index(wid, nwg, li);
  if (t >= p.lq * p.hq) { return; }
  let i = t / p.hq;
  dq_row(i, t % p.hq, varlen_keys(i));
}

// Key row j, query head h, over the query rows [r.x, r.y) that see key j: writes this head's share
// of dk/dv at [j, h, :].
fn dkdv_row(j: u32, h: u32, r: vec2u) {
  let g = kv_head(h);
  let ko = (j * p.hkv + g) * DV;
  var kr: array<VT, MAXV>;
  var vr: array<VT, MAXV>;
  var dka: array<VT, MAXV>;
  var dva: array<VT, MAXV>;
  for (var d = 0u; d < DV; d++) { kr[d] = k[ko + d] * p.scale; vr[d] = v[ko + d]; dka[d] = VT(0.0); dva[d] = VT(0.0); }
  for (var i = r.x; i < r.y; i++) {
    let row = i * p.hq + h;
    let qo = row * DV;
    var s = 0.0;
    var dp = 0.0;
    for (var d = 0u; d < DV; d++) { s += vdot(q[qo + d], kr[d]); dp += vdot(dy[qo + d], vr[d]); }
    let pj = exp(s - ld[2u * row]);
    let ds = pj * (dp - ld[2u * row + 1u]);
    for (var d = 0u; d < DV; d++) { dva[d] += pj * dy[qo + d]; dka[d] += ds * q[qo + d]; }
  }
  let o = (j * p.hq + h) * DV;
  for (var d = 0u; d < DV; d++) { dkh[o + d] = dka[d] * p.scale; dvh[o + d] = dva[d]; }
}

@compute @workgroup_size(WG)
fn attn_bwd_dkdv_causal(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = thread_index(wid, nwg, li);
  if (t >= p.lk * p.hq) { return; }
  let j = t / p.hq;
  // key j is seen by queries i with i + q_off >= j
  let first = select(0u, j - p.q_off, j > p.q_off);
  dkdv_row(j, t % p.hq, vec2u(first, max(first, p.lq)));
}

@compute @workgroup_size(WG)
fn attn_bwd_dkdv_varlen(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = thread_index(wid, nwg, li);
  if (t >= p.lk * p.hq) { return; }
  let j = t / p.hq;
  var r = segment(j);
  if (p.causal != 0u && r.y > r.x) { r.x = j; }
  dkdv_row(j, t % p.hq, r);
}

// dk[j, g] = Σ over the query heads of group g, in head order (one thread per VT of dk).
@compute @workgroup_size(WG)
fn attn_bwd_group_sum(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = thread_index(wid, nwg, li);
  if (t >= p.lk * p.hkv * DV) { return; }
  let d = t % DV;
  let jg = t / DV; // j * hkv + g
  let rep = p.hq / p.hkv;
  let base = jg * rep * DV + d; // (j * hq + g * rep) * DV + d
  var a = VT(0.0);
  var b = VT(0.0);
  for (var x = 0u; x < rep; x++) { a += dkh[base + x * DV]; b += dvh[base + x * DV]; }
  dk[t] = a;
  dv[t] = b;
}
