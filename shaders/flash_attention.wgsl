// Flash attention (FlashAttention-2 style), forward and backward, beside the register-only kernel
// in attention.wgsl (same tensors, same logsumexp, same key-range rules; the wrapper picks one per
// adapter). q [Lq,Hq,D], k/v rows [*,Hkv,D] (row stride Hkv·D: a KV cache is read in place);
// query head h reads kv head h / rep, rep = Hq/Hkv.
//   causal: query i sits at position i + q_off and sees keys [0, min(i + q_off + 1, lk));
//   varlen: query i sees the cu_seqlens segment [cu[s], cu[s+1]) holding it (cut at i+1 when causal).
//
// Work split. For kv head g the (query row, head of g) pairs are numbered u = i·rep + (h − g·rep);
// a workgroup owns WG consecutive u of one g (so for GQA it holds rep heads of the same rows) and
// streams the union of their key ranges through workgroup memory in tiles of KT keys: each K/V
// row is loaded once per workgroup and read by all WG threads, instead of once per thread. Each
// thread keeps its query row, its accumulator and an online softmax (one rescale per tile) in
// registers and skips the tile keys outside its own range.
// Backward (no float atomics, so deterministic):
//   1. flash_bwd_delta: ld = (lse, delta = Σ_d dy·out) per (row, head), first;
//   2. flash_bwd_dq_*: per query block, like the forward, P = exp(s − lse) recomputed per tile;
//   3. flash_bwd_dkdv_*: its own pass per key block: a thread owns key j of kv head g and streams
//      the tiles of (row, head) pairs that see it (q, dy, lse, delta staged in workgroup memory),
//      summing the rep heads of the group in order, so dk/dv come out [Lk,Hkv,D] directly.
// Workgroup memory is KT·MAXD floats per staged tensor (KT·MAXD = 1024: 4 KiB), modest on purpose:
// SwiftShader's compiler falls over on big tiles.

// Rows are read as VT = vec4 when D % 4 == 0; the wrapper swaps in the scalar lines otherwise.
alias VT = vec4<f32>;
const VW: u32 = 4u;
fn vdot(a: VT, b: VT) -> f32 { return dot(a, b); }
const MAXD: u32 = 128u;          // register capacity per thread (a bucket >= D), set by the wrapper
const KT: u32 = 8u;              // rows per staged tile, set by the wrapper: KT·MAXD = 1024
const MAXV: u32 = MAXD / VW;
const TV: u32 = KT * MAXV;       // VT slots per staged tile
const NEG: f32 = -3.0e38;
const WG: u32 = 64u;
override DV: u32 = 32u;          // head dim / VW, fixed per pipeline so loops have constant trip counts

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
@group(0) @binding(10) var<storage, read_write> dk: array<VT>;  // [lk, hkv, d]
@group(0) @binding(11) var<storage, read_write> dv: array<VT>;
// the forward's outputs as backward inputs: read-only, so they may alias other inputs
@group(0) @binding(12) var<storage, read> out_in: array<VT>;
@group(0) @binding(13) var<storage, read> lse_in: array<f32>;
@group(0) @binding(14) var<storage, read> ld_in: array<f32>;

// Staged tiles: keys (ta = K, tb = V) in the forward and dq passes; (row, head) pairs (ta = q,
// tb = dy, tl = (lse, delta)) in the dk/dv pass.
var<workgroup> ta: array<VT, TV>;
var<workgroup> tb: array<VT, TV>;
var<workgroup> tl: array<vec2f, KT>;

fn rep() -> u32 { return p.hq / p.hkv; }

// Workgroup -> (kv head g, first u of its block); blocks of WG items, nb blocks per kv head.
fn block(wid: vec3u, nwg: vec3u, items: u32) -> vec3u {
  let w = wid.x + wid.y * nwg.x;
  let nb = (items + WG - 1u) / WG;
  return vec3u(w / nb, (w % nb) * WG, nb * p.hkv);
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

// Rows [a, b] (inclusive) -> the union of their segments (segments are sorted, so it is one range
// from the first covered row's segment start to the last covered row's segment end).
fn segments_union(a: u32, b: u32) -> vec2u {
  if (p.nseg == 0u) { return vec2u(0u, 0u); }
  let c0 = u32(max(cu[0], 0));
  let c1 = u32(max(cu[p.nseg], 0));
  let lo = max(a, c0);
  let hi = min(b, c1 - 1u);
  if (c1 <= c0 || lo > hi) { return vec2u(0u, 0u); }
  return vec2u(segment(lo).x, segment(hi).y);
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

// Stage key rows [j0, j0 + KT) of kv head g into ta (K) and tb (V); rows >= end become zeros.
fn stage_kv(j0: u32, end: u32, g: u32, li: u32) {
  for (var e = li; e < KT * DV; e += WG) {
    let j = j0 + e / DV;
    let o = (j * p.hkv + g) * DV + e % DV;
    ta[e] = select(VT(0.0), k[min(o, arrayLength(&k) - 1u)], j < end);
    tb[e] = select(VT(0.0), v[min(o, arrayLength(&v) - 1u)], j < end);
  }
}

// One workgroup: the pairs u in [u0, u0 + WG) of kv head g; keys `all` (the block's union) are
// staged; this thread's own keys are `r` (empty for padding threads past the last pair).
fn fwd_block(g: u32, u0: u32, li: u32, all: vec2u, r: vec2u) {
  let u = u0 + li;
  let ok = u < p.lq * rep();
  let row = select(0u, (u / rep()) * p.hq + g * rep() + u % rep(), ok);
  let qo = row * DV;
  var qr: array<VT, MAXV>;
  var acc: array<VT, MAXV>;
  for (var d = 0u; d < DV; d++) { qr[d] = select(VT(0.0), q[qo + d] * p.scale, ok); acc[d] = VT(0.0); }
  var m = NEG;
  var l = 0.0;
  var sc: array<f32, KT>;
  for (var j0 = all.x; j0 < all.y; j0 += KT) {
    workgroupBarrier();
    stage_kv(j0, all.y, g, li);
    workgroupBarrier();
    let a = max(j0, r.x);
    let b = min(j0 + KT, r.y);
    if (a < b) {
      var bm = NEG;
      for (var j = a; j < b; j++) {
        let to = (j - j0) * DV;
        var s = 0.0;
        for (var d = 0u; d < DV; d++) { s += vdot(qr[d], ta[to + d]); }
        sc[j - j0] = s;
        bm = max(bm, s);
      }
      if (bm > m) {
        let c = exp(m - bm);
        l *= c;
        for (var d = 0u; d < DV; d++) { acc[d] *= c; }
        m = bm;
      }
      for (var j = a; j < b; j++) {
        let pj = exp(sc[j - j0] - m);
        l += pj;
        let to = (j - j0) * DV;
        for (var d = 0u; d < DV; d++) { acc[d] += pj * tb[to + d]; }
      }
    }
  }
  if (!ok) { return; }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var d = 0u; d < DV; d++) { out[qo + d] = acc[d] * inv; }
  lse[row] = select(0.0, m + log(l), l > 0.0);
}

// Query rows [i0, i1] of the block of pairs starting at u0 (clamped to the last row).
fn rows_of(u0: u32) -> vec2u {
  return vec2u(u0 / rep(), min(p.lq - 1u, (u0 + WG - 1u) / rep()));
}

@compute @workgroup_size(WG)
fn flash_fwd_causal(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let b = block(wid, nwg, p.lq * rep());
  if (b.x >= p.hkv) { return; } // whole workgroup past the grid: uniform exit
  let rr = rows_of(b.y);
  let i = (b.y + li) / rep();
  let r = select(vec2u(0u, 0u), causal_keys(i), b.y + li < p.lq * rep());
  fwd_block(b.x, b.y, li, causal_keys(rr.y), r);
}

@compute @workgroup_size(WG)
fn flash_fwd_varlen(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let b = block(wid, nwg, p.lq * rep());
  if (b.x >= p.hkv) { return; }
  let rr = rows_of(b.y);
  let i = (b.y + li) / rep();
  let r = select(vec2u(0u, 0u), varlen_keys(i), b.y + li < p.lq * rep());
  var all = segments_union(rr.x, rr.y);
  if (p.causal != 0u) { all.y = min(all.y, rr.y + 1u); }
  fwd_block(b.x, b.y, li, all, r);
}

// ---- backward ----------------------------------------------------------------------------

// ld = (lse, delta = Σ_d dy·out) per (row, head), one thread each.
@compute @workgroup_size(WG)
fn flash_bwd_delta(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = (wid.x + wid.y * nwg.x) * WG + li;
  if (t >= p.lq * p.hq) { return; }
  let o = t * DV;
  var s = 0.0;
  for (var d = 0u; d < DV; d++) { s += vdot(dy[o + d], out_in[o + d]); }
  ld[2u * t] = lse_in[t];
  ld[2u * t + 1u] = s;
}

// dq for the pairs [u0, u0 + WG) of kv head g: dq_i = scale · Σ_j P_ij (dy_i·v_j − delta_i) k_j.
fn dq_block(g: u32, u0: u32, li: u32, all: vec2u, r: vec2u) {
  let u = u0 + li;
  let ok = u < p.lq * rep();
  let row = select(0u, (u / rep()) * p.hq + g * rep() + u % rep(), ok);
  let qo = row * DV;
  var qr: array<VT, MAXV>;
  var dyr: array<VT, MAXV>;
  var acc: array<VT, MAXV>;
  for (var d = 0u; d < DV; d++) {
    qr[d] = select(VT(0.0), q[qo + d] * p.scale, ok);
    dyr[d] = select(VT(0.0), dy[qo + d], ok);
    acc[d] = VT(0.0);
  }
  let L = ld_in[2u * row];
  let delta = ld_in[2u * row + 1u];
  for (var j0 = all.x; j0 < all.y; j0 += KT) {
    workgroupBarrier();
    stage_kv(j0, all.y, g, li);
    workgroupBarrier();
    let a = max(j0, r.x);
    let b = min(j0 + KT, r.y);
    for (var j = a; j < b; j++) {
      let to = (j - j0) * DV;
      var s = 0.0;
      var dp = 0.0;
      for (var d = 0u; d < DV; d++) { s += vdot(qr[d], ta[to + d]); dp += vdot(dyr[d], tb[to + d]); }
      let ds = exp(s - L) * (dp - delta);
      for (var d = 0u; d < DV; d++) { acc[d] += ds * ta[to + d]; }
    }
  }
  if (!ok) { return; }
  for (var d = 0u; d < DV; d++) { dq[qo + d] = acc[d] * p.scale; }
}

@compute @workgroup_size(WG)
fn flash_bwd_dq_causal(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let b = block(wid, nwg, p.lq * rep());
  if (b.x >= p.hkv) { return; }
  let rr = rows_of(b.y);
  let i = (b.y + li) / rep();
  let r = select(vec2u(0u, 0u), causal_keys(i), b.y + li < p.lq * rep());
  dq_block(b.x, b.y, li, causal_keys(rr.y), r);
}

@compute @workgroup_size(WG)
fn flash_bwd_dq_varlen(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let b = block(wid, nwg, p.lq * rep());
  if (b.x >= p.hkv) { return; }
  let rr = rows_of(b.y);
  let i = (b.y + li) / rep();
  let r = select(vec2u(0u, 0u), varlen_keys(i), b.y + li < p.lq * rep());
  var all = segments_union(rr.x, rr.y);
  if (p.causal != 0u) { all.y = min(all.y, rr.y + 1u); }
  dq_block(b.x, b.y, li, all, r);
}

// Stage pairs [u0, u0 + KT) of kv head g (q, dy, (lse, delta)); pairs >= end become zeros.
fn stage_q(u0: u32, end: u32, g: u32, li: u32) {
  let rp = rep();
  for (var e = li; e < KT * DV; e += WG) {
    let u = u0 + e / DV;
    let o = ((u / rp) * p.hq + g * rp + u % rp) * DV + e % DV;
    ta[e] = select(VT(0.0), q[min(o, arrayLength(&q) - 1u)], u < end);
    tb[e] = select(VT(0.0), dy[min(o, arrayLength(&dy) - 1u)], u < end);
  }
  if (li < KT) {
    let u = u0 + li;
    let row = min((u / rp) * p.hq + g * rp + u % rp, p.lq * p.hq - 1u);
    tl[li] = select(vec2f(0.0), vec2f(ld_in[2u * row], ld_in[2u * row + 1u]), u < end);
  }
}

// Key j0 + li of kv head g over the pairs `all` (the block's union, staged) and its own pairs `r`:
// dv_j = Σ P_ij dy_i, dk_j = scale · Σ P_ij (dy_i·v_j − delta_i) q_i, summed over the group's heads.
fn dkdv_block(g: u32, j0: u32, li: u32, all: vec2u, r: vec2u) {
  let j = j0 + li;
  let ok = j < p.lk;
  let ko = select(0u, (j * p.hkv + g) * DV, ok);
  var kr: array<VT, MAXV>;
  var vr: array<VT, MAXV>;
  var dka: array<VT, MAXV>;
  var dva: array<VT, MAXV>;
  for (var d = 0u; d < DV; d++) {
    kr[d] = select(VT(0.0), k[ko + d] * p.scale, ok);
    vr[d] = select(VT(0.0), v[ko + d], ok);
    dka[d] = VT(0.0);
    dva[d] = VT(0.0);
  }
  for (var u0 = all.x; u0 < all.y; u0 += KT) {
    workgroupBarrier();
    stage_q(u0, all.y, g, li);
    workgroupBarrier();
    let a = max(u0, r.x);
    let b = min(u0 + KT, r.y);
    for (var u = a; u < b; u++) {
      let to = (u - u0) * DV;
      var s = 0.0;
      var dp = 0.0;
      for (var d = 0u; d < DV; d++) { s += vdot(ta[to + d], kr[d]); dp += vdot(tb[to + d], vr[d]); }
      let ldu = tl[u - u0];
      let pj = exp(s - ldu.x);
      let ds = pj * (dp - ldu.y);
      for (var d = 0u; d < DV; d++) { dva[d] += pj * tb[to + d]; dka[d] += ds * ta[to + d]; }
    }
  }
  if (!ok) { return; }
  for (var d = 0u; d < DV; d++) { dk[ko + d] = dka[d] * p.scale; dv[ko + d] = dva[d]; }
}

@compute @workgroup_size(WG)
fn flash_bwd_dkdv_causal(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let b = block(wid, nwg, p.lk);
  if (b.x >= p.hkv) { return; }
  let rp = rep();
  // key j is seen by queries i >= j − q_off, i.e. by pairs u >= (j − q_off)·rep
  let first = select(0u, b.y - p.q_off, b.y > p.q_off);
  let j = b.y + li;
  let own = select(0u, j - p.q_off, j > p.q_off);
  let r = select(vec2u(0u, 0u), vec2u(min(own, p.lq) * rp, p.lq * rp), j < p.lk);
  dkdv_block(b.x, b.y, li, vec2u(min(first, p.lq) * rp, p.lq * rp), r);
}

@compute @workgroup_size(WG)
fn flash_bwd_dkdv_varlen(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let b = block(wid, nwg, p.lk);
  if (b.x >= p.hkv) { return; }
  let rp = rep();
  let j = b.y + li;
  var own = segment(j);
  if (p.causal != 0u && own.y > own.x) { own.x = j; }
  let r = select(vec2u(0u, 0u), own * rp, j < p.lk);
  var all = segments_union(b.y, min(p.lk - 1u, b.y + WG - 1u));
  if (p.causal != 0u && all.y > all.x) { all.x = max(all.x, b.y); }
  dkdv_block(b.x, b.y, li, all * rp, r);
}
