// Flash attention (FlashAttention-2 style), forward and backward, beside the one-thread-per-row
// kernel in attention.wgsl (same tensors, same logsumexp, same key-range rules; the wrapper picks
// one per adapter). q [Lq,Hq,D], k/v rows [*,Hkv,D] (row stride Hkv·D: a KV cache is read in
// place); query head h reads kv head g = h / rep, rep = Hq/Hkv.
//   causal: query i sits at position i + q_off and sees keys [0, min(i + q_off + 1, lk));
//   varlen: query i sees the cu_seqlens segment [cu[s], cu[s+1]) holding it (cut at i+1 when causal).
//
// Work split. For kv head g the (query row, head of g) pairs are numbered u = i·rep + (h − g·rep).
// A thread owns 4 consecutive pairs (for GQA: 4 heads of one row, all reading the same keys) and a
// workgroup owns WG·4 pairs; it streams the union of their key ranges through workgroup memory in
// tiles of KT keys. Inside a tile a thread takes keys 8 at a time as two 4×4 score blocks, each
// mat4x4 arithmetic over vec4 chunks of D (transpose(K)·Q), as in the register-blocked matmul, so
// every loaded vec4 feeds 4 pairs or 4 keys. The output accumulator is one mat4x4 per chunk
// (column r = pair r) under an online softmax (one rescale per 8 keys). The dk/dv and dq passes
// are built the same way (8 rows or keys per accumulator update).
// Backward (no float atomics, so deterministic):
//   1. flash_bwd_prep_*: ld = (lse, delta = Σ_d dy·out, key range lo, hi) per (row, head), first;
//   2. flash_bwd_dkdv: its own pass per (key block, query head h): a thread owns 4 keys of kv
//      head g = h / rep and streams the tiles of rows that see them (q, dy, lse, delta staged),
//      P = exp(s − lse) recomputed; for GQA it writes head h's share [Lk,Hq,D] and
//      flash_bwd_group_sum adds the rep shares of each kv head in order (for rep = 1 the share is
//      dk itself). One workgroup per query head, not per kv head: rep times the parallelism. When
//      the wrapper gives it a dS scratch (rows × key window, if that fits a budget) it also
//      writes dS = P∘(dP − delta) there, and
//   3a. flash_bwd_dq_ds: dq = scale · dS·K per query block, from that scratch (no recompute), or
//   3b. flash_bwd_dq: dq per query block recomputing P and dP (when the scratch would not fit).
// Workgroup memory: KT·MAXD floats per staged tensor, KT·MAXD = 1024 (4 KiB), modest on purpose:
// SwiftShader's compiler falls over on big tiles.

const MAXD: u32 = 128u;          // head-dim capacity (a bucket >= D), set by the wrapper
const KT: u32 = 8u;              // rows per staged tile, a multiple of 4, set by the wrapper
const MAXC: u32 = MAXD / 4u;     // vec4 chunks per row, at most
const NEG: f32 = -3.0e38;
const WG: u32 = 16u;             // threads per workgroup; each owns 4 pairs (or 4 keys)
override DC: u32 = 32u;          // vec4 chunks per row = ceil(D / 4), fixed per pipeline

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
  varlen: u32,  // 1 for the varlen kind
  w4: u32,      // dS scratch row width in vec4 (0: no scratch)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<VT>;
@group(0) @binding(2) var<storage, read> k: array<VT>;
@group(0) @binding(3) var<storage, read> v: array<VT>;
@group(0) @binding(4) var<storage, read_write> out: array<VT>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read> cu: array<i32>;
@group(0) @binding(7) var<storage, read> dy: array<VT>;
@group(0) @binding(8) var<storage, read_write> ld: array<vec4f>;   // (lse, delta, lo, hi) per (row, head)
@group(0) @binding(9) var<storage, read_write> dq: array<VT>;
@group(0) @binding(10) var<storage, read_write> dk: array<VT>;     // [lk, hkv, d]
@group(0) @binding(11) var<storage, read_write> dv: array<VT>;
// the forward's outputs as backward inputs: read-only, so they may alias other inputs
@group(0) @binding(12) var<storage, read> out_in: array<VT>;
@group(0) @binding(13) var<storage, read> lse_in: array<f32>;
@group(0) @binding(14) var<storage, read> ld_in: array<vec4f>;
@group(0) @binding(15) var<storage, read_write> ds: array<vec4f>;  // dS scratch [lq·hq, w4] of 4-key blocks
@group(0) @binding(16) var<storage, read> dkh: array<VT>;          // per-query-head shares [lk, hq, d]
@group(0) @binding(17) var<storage, read> dvh: array<VT>;

// ---- row access: chunk c (4 elements) of row `row` ------------------------------------------
// D % 4 == 0: rows are vec4 arrays. Otherwise the wrapper swaps in the scalar section below.
//<vec4>
alias VT = vec4<f32>;
fn ldq(row: u32, c: u32) -> vec4f { return q[row * DC + c]; }
fn ldk(row: u32, c: u32) -> vec4f { return k[row * DC + c]; }
fn ldv(row: u32, c: u32) -> vec4f { return v[row * DC + c]; }
fn lddy(row: u32, c: u32) -> vec4f { return dy[row * DC + c]; }
fn ldo(row: u32, c: u32) -> vec4f { return out_in[row * DC + c]; }
fn stout(row: u32, c: u32, x: vec4f) { out[row * DC + c] = x; }
fn stdq(row: u32, c: u32, x: vec4f) { dq[row * DC + c] = x; }
fn stdk(row: u32, c: u32, x: vec4f) { dk[row * DC + c] = x; }
fn stdv(row: u32, c: u32, x: vec4f) { dv[row * DC + c] = x; }
fn row_vts() -> u32 { return DC; }
//</vec4>
/*<scalar>
alias VT = f32;
// element e of chunk c, zero past the head dim (reads clamped into the array)
fn el(c: u32, e: u32) -> bool { return 4u * c + e < p.d; }
fn ldq(row: u32, c: u32) -> vec4f { let o = row * p.d + 4u * c; let n = arrayLength(&q) - 1u; return vec4f(q[o], select(0.0, q[min(o + 1u, n)], el(c, 1u)), select(0.0, q[min(o + 2u, n)], el(c, 2u)), select(0.0, q[min(o + 3u, n)], el(c, 3u))); }
fn ldk(row: u32, c: u32) -> vec4f { let o = row * p.d + 4u * c; let n = arrayLength(&k) - 1u; return vec4f(k[o], select(0.0, k[min(o + 1u, n)], el(c, 1u)), select(0.0, k[min(o + 2u, n)], el(c, 2u)), select(0.0, k[min(o + 3u, n)], el(c, 3u))); }
fn ldv(row: u32, c: u32) -> vec4f { let o = row * p.d + 4u * c; let n = arrayLength(&v) - 1u; return vec4f(v[o], select(0.0, v[min(o + 1u, n)], el(c, 1u)), select(0.0, v[min(o + 2u, n)], el(c, 2u)), select(0.0, v[min(o + 3u, n)], el(c, 3u))); }
fn lddy(row: u32, c: u32) -> vec4f { let o = row * p.d + 4u * c; let n = arrayLength(&dy) - 1u; return vec4f(dy[o], select(0.0, dy[min(o + 1u, n)], el(c, 1u)), select(0.0, dy[min(o + 2u, n)], el(c, 2u)), select(0.0, dy[min(o + 3u, n)], el(c, 3u))); }
fn ldo(row: u32, c: u32) -> vec4f { let o = row * p.d + 4u * c; let n = arrayLength(&out_in) - 1u; return vec4f(out_in[o], select(0.0, out_in[min(o + 1u, n)], el(c, 1u)), select(0.0, out_in[min(o + 2u, n)], el(c, 2u)), select(0.0, out_in[min(o + 3u, n)], el(c, 3u))); }
fn stout(row: u32, c: u32, x: vec4f) { let o = row * p.d + 4u * c; out[o] = x.x; if (el(c, 1u)) { out[o + 1u] = x.y; } if (el(c, 2u)) { out[o + 2u] = x.z; } if (el(c, 3u)) { out[o + 3u] = x.w; } }
fn stdq(row: u32, c: u32, x: vec4f) { let o = row * p.d + 4u * c; dq[o] = x.x; if (el(c, 1u)) { dq[o + 1u] = x.y; } if (el(c, 2u)) { dq[o + 2u] = x.z; } if (el(c, 3u)) { dq[o + 3u] = x.w; } }
fn stdk(row: u32, c: u32, x: vec4f) { let o = row * p.d + 4u * c; dk[o] = x.x; if (el(c, 1u)) { dk[o + 1u] = x.y; } if (el(c, 2u)) { dk[o + 2u] = x.z; } if (el(c, 3u)) { dk[o + 3u] = x.w; } }
fn stdv(row: u32, c: u32, x: vec4f) { let o = row * p.d + 4u * c; dv[o] = x.x; if (el(c, 1u)) { dv[o + 1u] = x.y; } if (el(c, 2u)) { dv[o + 2u] = x.z; } if (el(c, 3u)) { dv[o + 3u] = x.w; } }
fn row_vts() -> u32 { return p.d; }
</scalar>*/

// ---- shared helpers -------------------------------------------------------------------------

// Staged tiles: K (ta) and V (tb) rows in the forward and dq passes; q (ta), dy (tb), (lse, delta)
// (tl) and (lo, hi, flat row) (tp) of pairs in the dk/dv pass. Row t of a tile at [t·DC, (t+1)·DC).
var<workgroup> ta: array<vec4f, KT * MAXC>;
var<workgroup> tb: array<vec4f, KT * MAXC>;
var<workgroup> tl: array<vec2f, KT>;
var<workgroup> tp: array<vec4u, KT>;
var<workgroup> wlo: atomic<u32>;
var<workgroup> whi: atomic<u32>;
var<workgroup> wrange: vec2u;

fn rep() -> u32 { return p.hq / p.hkv; }

// Flat (row, head) index of pair u of kv head g.
fn pair_row(g: u32, u: u32) -> u32 {
  let rp = rep();
  return (u / rp) * p.hq + g * rp + u % rp;
}

// Workgroup -> (kv head g, first item of its block), blocks of `per` items.
fn block(wid: vec3u, nwg: vec3u, items: u32, per: u32) -> vec2u {
  let w = wid.x + wid.y * nwg.x;
  let nb = (items + per - 1u) / per;
  return vec2u(w / nb, (w % nb) * per);
}

// Union of the threads' ranges [lo, hi) (empty ones ignored), lo rounded down to a multiple of 4
// so that 4-key blocks stay aligned; the same value in every thread (integer atomics: exact).
fn union_range(r: vec2u, li: u32) -> vec2u {
  if (li == 0u) { atomicStore(&wlo, 0xffffffffu); atomicStore(&whi, 0u); }
  workgroupBarrier();
  if (r.y > r.x) { atomicMin(&wlo, r.x); atomicMax(&whi, r.y); }
  workgroupBarrier();
  if (li == 0u) {
    let a = atomicLoad(&wlo);
    let b = atomicLoad(&whi);
    wrange = select(vec2u(0u, 0u), vec2u(a & ~3u, b), b > a);
  }
  return workgroupUniformLoad(&wrange);
}

// Union of 4 ranges (components of lo, hi); empty -> (max, 0).
fn union4(lo: vec4u, hi: vec4u) -> vec2u {
  var a = 0xffffffffu;
  var b = 0u;
  for (var r = 0u; r < 4u; r++) {
    if (hi[r] > lo[r]) { a = min(a, lo[r]); b = max(b, hi[r]); }
  }
  return vec2u(a, b);
}

// Keys jb..jb+3 inside [lo, hi)?
fn vis(jb: u32, lo: u32, hi: u32) -> vec4<bool> {
  let j = vec4u(jb) + vec4u(0u, 1u, 2u, 3u);
  return (j >= vec4u(lo)) & (j < vec4u(hi));
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

// Key range of query row i: causal rule, or its varlen segment (uncut: see cut()).
fn causal_keys(i: u32) -> vec2u { return vec2u(0u, min(p.lk, i + p.q_off + 1u)); }
// varlen + causal: keys after the query are masked
fn cut(i: u32, r: vec2u) -> vec2u {
  if (p.varlen != 0u && p.causal != 0u && r.y > r.x) { return vec2u(r.x, min(r.y, i + 1u)); }
  return r;
}

// Stage key rows [j0, j0 + KT) of kv head g into ta (K) and, with `both`, tb (V); rows >= end -> 0.
fn stage_kv(j0: u32, end: u32, g: u32, li: u32, both: bool) {
  for (var e = li; e < KT * DC; e += WG) {
    let j = j0 + e / DC;
    let c = e % DC;
    let row = min(j, p.lk - 1u) * p.hkv + g;
    ta[e] = select(vec4f(0.0), ldk(row, c), j < end);
    if (both) { tb[e] = select(vec4f(0.0), ldv(row, c), j < end); }
  }
}

fn mcol(a: u32) -> mat4x4f {
  return mat4x4f(ta[a], ta[a + DC], ta[a + 2u * DC], ta[a + 3u * DC]);
}
fn mcolb(a: u32) -> mat4x4f {
  return mat4x4f(tb[a], tb[a + DC], tb[a + 2u * DC], tb[a + 3u * DC]);
}
fn hmax(x: vec4f) -> f32 { return max(max(x.x, x.y), max(x.z, x.w)); }
fn hsum(x: vec4f) -> f32 { return (x.x + x.y) + (x.z + x.w); }
fn scale_cols(a: mat4x4f, s: vec4f) -> mat4x4f { return mat4x4f(a[0] * s.x, a[1] * s.y, a[2] * s.z, a[3] * s.w); }
// Kernels take keys (or pairs) 8 at a time, as two 4-blocks, when the tile holds 8.
const TWO: bool = KT >= 8u;

// Scores (column r = pair r, over keys jb..jb+3) scaled, NEG outside each pair's range.
struct Masked { s: mat4x4f, v0: vec4<bool>, v1: vec4<bool>, v2: vec4<bool>, v3: vec4<bool> }
fn masked(s: mat4x4f, jb: u32, lo: vec4u, hi: vec4u) -> Masked {
  var o: Masked;
  o.v0 = vis(jb, lo.x, hi.x); o.v1 = vis(jb, lo.y, hi.y); o.v2 = vis(jb, lo.z, hi.z); o.v3 = vis(jb, lo.w, hi.w);
  o.s = mat4x4f(select(vec4f(NEG), s[0] * p.scale, o.v0), select(vec4f(NEG), s[1] * p.scale, o.v1),
                select(vec4f(NEG), s[2] * p.scale, o.v2), select(vec4f(NEG), s[3] * p.scale, o.v3));
  return o;
}
fn colmax(a: Masked) -> vec4f { return vec4f(hmax(a.s[0]), hmax(a.s[1]), hmax(a.s[2]), hmax(a.s[3])); }
fn colsum(a: mat4x4f) -> vec4f { return vec4f(hsum(a[0]), hsum(a[1]), hsum(a[2]), hsum(a[3])); }
// exp(s − m) per column, 0 outside the ranges
fn probs(a: Masked, m: vec4f) -> mat4x4f {
  return mat4x4f(select(vec4f(0.0), exp(a.s[0] - m.x), a.v0), select(vec4f(0.0), exp(a.s[1] - m.y), a.v1),
                 select(vec4f(0.0), exp(a.s[2] - m.z), a.v2), select(vec4f(0.0), exp(a.s[3] - m.w), a.v3));
}

// ---- forward -----------------------------------------------------------------------------

// Pairs u0 + 4·li + r (r < 4) of kv head g with key ranges [lo[r], hi[r]) (empty past the end).
fn fwd_block(g: u32, u0: u32, li: u32, lo: vec4u, hi: vec4u) {
  let ub = u0 + 4u * li;
  let nu = p.lq * rep();
  let rows = vec4u(pair_row(g, min(ub, nu - 1u)), pair_row(g, min(ub + 1u, nu - 1u)), pair_row(g, min(ub + 2u, nu - 1u)), pair_row(g, min(ub + 3u, nu - 1u)));
  let own = union4(lo, hi);
  let all = union_range(own, li);
  var acc: array<mat4x4f, MAXC>;
  for (var c = 0u; c < DC; c++) { acc[c] = mat4x4f(); }
  var m = vec4f(NEG);
  var l = vec4f(0.0);
  for (var j0 = all.x; j0 < all.y; j0 += KT) {
    workgroupBarrier();
    stage_kv(j0, all.y, g, li, true);
    workgroupBarrier();
    for (var b = 0u; b < KT; b += 8u) {
      let jb = j0 + b;
      if (jb >= own.y || jb + 8u <= own.x) { continue; }
      // S column r = scores of pair r against keys jb..jb+3 (s0) and jb+4..jb+7 (s1)
      var s0 = mat4x4f();
      var s1 = mat4x4f();
      for (var c = 0u; c < DC; c++) {
        let qm = mat4x4f(ldq(rows.x, c), ldq(rows.y, c), ldq(rows.z, c), ldq(rows.w, c));
        s0 += transpose(mcol(b * DC + c)) * qm;
        if (TWO) { s1 += transpose(mcol((b + 4u) * DC + c)) * qm; }
      }
      let a0 = masked(s0, jb, lo, hi);
      let a1 = masked(s1, jb + 4u, lo, select(lo, hi, TWO)); // no second block when KT == 4
      let mn = max(m, max(colmax(a0), colmax(a1)));
      let cf = exp(m - mn);
      let p0 = probs(a0, mn);
      let p1 = probs(a1, mn);
      l = l * cf + colsum(p0) + colsum(p1);
      m = mn;
      for (var c = 0u; c < DC; c++) {
        var x = scale_cols(acc[c], cf) + mcolb(b * DC + c) * p0;
        if (TWO) { x += mcolb((b + 4u) * DC + c) * p1; }
        acc[c] = x;
      }
    }
  }
  let inv = select(vec4f(0.0), 1.0 / l, l > vec4f(0.0));
  let ls = select(vec4f(0.0), m + log(l), l > vec4f(0.0));
  for (var r = 0u; r < 4u; r++) {
    if (ub + r >= nu) { break; }
    for (var c = 0u; c < DC; c++) { stout(rows[r], c, acc[c][r] * inv[r]); }
    lse[rows[r]] = ls[r];
  }
}

@compute @workgroup_size(WG)
fn flash_fwd_causal(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let nu = p.lq * rep();
  let b = block(wid, nwg, nu, 4u * WG);
  if (b.x >= p.hkv) { return; } // whole workgroup past the grid: uniform exit
  var lo = vec4u(0u);
  var hi = vec4u(0u);
  for (var r = 0u; r < 4u; r++) {
    let u = b.y + 4u * li + r;
    if (u < nu) { hi[r] = causal_keys(u / rep()).y; }
  }
  fwd_block(b.x, b.y, li, lo, hi);
}

@compute @workgroup_size(WG)
fn flash_fwd_varlen(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let nu = p.lq * rep();
  let b = block(wid, nwg, nu, 4u * WG);
  if (b.x >= p.hkv) { return; }
  var lo = vec4u(0u);
  var hi = vec4u(0u);
  for (var r = 0u; r < 4u; r++) {
    let u = b.y + 4u * li + r;
    if (u < nu) { let i = u / rep(); let s = cut(i, segment(i)); lo[r] = s.x; hi[r] = s.y; }
  }
  fwd_block(b.x, b.y, li, lo, hi);
}

// ---- backward ----------------------------------------------------------------------------

fn prep(t: u32, keys: vec2u) {
  var s = 0.0;
  for (var c = 0u; c < DC; c++) { s += dot(lddy(t, c), ldo(t, c)); }
  ld[t] = vec4f(lse_in[t], s, f32(keys.x), f32(keys.y));
}

// ld = (lse, delta = Σ_d dy·out, lo, hi) per (row, head), one thread each; (lo, hi) is the key
// range of the row (varlen: its whole segment, cut() applies causality).
@compute @workgroup_size(64)
fn flash_bwd_prep_causal(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = (wid.x + wid.y * nwg.x) * 64u + li;
  if (t >= p.lq * p.hq) { return; }
  prep(t, causal_keys(t / p.hq));
}

@compute @workgroup_size(64)
fn flash_bwd_prep_varlen(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = (wid.x + wid.y * nwg.x) * 64u + li;
  if (t >= p.lq * p.hq) { return; }
  prep(t, segment(t / p.hq));
}

// Pair ranges of this thread's 4 pairs from ld (empty past the end), and their ld entries.
struct Pairs { rows: vec4u, lo: vec4u, hi: vec4u, lse: vec4f, delta: vec4f }
fn pairs(g: u32, ub: u32) -> Pairs {
  let nu = p.lq * rep();
  var o: Pairs;
  for (var r = 0u; r < 4u; r++) {
    let u = min(ub + r, nu - 1u);
    let row = pair_row(g, u);
    let e = ld_in[row];
    let kr = cut(u / rep(), vec2u(u32(e.z), u32(e.w)));
    o.rows[r] = row;
    o.lse[r] = e.x;
    o.delta[r] = e.y;
    if (ub + r < nu) { o.lo[r] = kr.x; o.hi[r] = kr.y; }
  }
  return o;
}

// dq for pairs u0 + 4·li + r of kv head g: dq_i = scale · Σ_j P_ij (dy_i·v_j − delta_i) k_j,
// P and dP recomputed per 4-key block.
@compute @workgroup_size(WG)
fn flash_bwd_dq(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let nu = p.lq * rep();
  let bk = block(wid, nwg, nu, 4u * WG);
  if (bk.x >= p.hkv) { return; }
  let g = bk.x;
  let ub = bk.y + 4u * li;
  let pr = pairs(g, ub);
  let own = union4(pr.lo, pr.hi);
  let all = union_range(own, li);
  var acc: array<mat4x4f, MAXC>;
  for (var c = 0u; c < DC; c++) { acc[c] = mat4x4f(); }
  for (var j0 = all.x; j0 < all.y; j0 += KT) {
    workgroupBarrier();
    stage_kv(j0, all.y, g, li, true);
    workgroupBarrier();
    for (var b = 0u; b < KT; b += 4u) {
      let jb = j0 + b;
      if (jb >= own.y || jb + 4u <= own.x) { continue; }
      var s = mat4x4f();
      var dp = mat4x4f();
      for (var c = 0u; c < DC; c++) {
        let a = b * DC + c;
        s += transpose(mcol(a)) * mat4x4f(ldq(pr.rows.x, c), ldq(pr.rows.y, c), ldq(pr.rows.z, c), ldq(pr.rows.w, c));
        dp += transpose(mcolb(a)) * mat4x4f(lddy(pr.rows.x, c), lddy(pr.rows.y, c), lddy(pr.rows.z, c), lddy(pr.rows.w, c));
      }
      // column r: dS of pair r over the 4 keys
      let dsm = mat4x4f(
        select(vec4f(0.0), exp(s[0] * p.scale - pr.lse.x), vis(jb, pr.lo.x, pr.hi.x)) * (dp[0] - pr.delta.x),
        select(vec4f(0.0), exp(s[1] * p.scale - pr.lse.y), vis(jb, pr.lo.y, pr.hi.y)) * (dp[1] - pr.delta.y),
        select(vec4f(0.0), exp(s[2] * p.scale - pr.lse.z), vis(jb, pr.lo.z, pr.hi.z)) * (dp[2] - pr.delta.z),
        select(vec4f(0.0), exp(s[3] * p.scale - pr.lse.w), vis(jb, pr.lo.w, pr.hi.w)) * (dp[3] - pr.delta.w));
      for (var c = 0u; c < DC; c++) { acc[c] += mcol(b * DC + c) * dsm; }
    }
  }
  for (var r = 0u; r < 4u; r++) {
    if (ub + r >= nu) { break; }
    for (var c = 0u; c < DC; c++) { stdq(pr.rows[r], c, acc[c][r] * p.scale); }
  }
}

// dS scratch position of the 4-key block at jb for a pair whose range starts at lo: rows of
// w4 blocks, counted from lo rounded down to a multiple of 4 (0 for causal).
fn ds_col(jb: u32, lo: u32) -> u32 { return (jb - (lo & ~3u)) / 4u; }
fn ds_at(row: u32, jb: u32, lo: u32) -> u32 { return row * p.w4 + ds_col(jb, lo); }
// Block jb holds keys of the range [lo, hi), and its column fits the scratch row (it always does
// when maxSeqlen is right; a too-small one must not spill into the next row).
fn touches(jb: u32, lo: u32, hi: u32) -> bool { return jb < hi && jb + 4u > lo && ds_col(jb, lo) < p.w4; }

// Column r = pair r's dS over keys jb..jb+3 from the scratch (0 where the pair does not touch them).
fn ds_block(pr: Pairs, jb: u32) -> mat4x4f {
  return mat4x4f(
    select(vec4f(0.0), ds[ds_at(pr.rows.x, jb, pr.lo.x)], touches(jb, pr.lo.x, pr.hi.x)),
    select(vec4f(0.0), ds[ds_at(pr.rows.y, jb, pr.lo.y)], touches(jb, pr.lo.y, pr.hi.y)),
    select(vec4f(0.0), ds[ds_at(pr.rows.z, jb, pr.lo.z)], touches(jb, pr.lo.z, pr.hi.z)),
    select(vec4f(0.0), ds[ds_at(pr.rows.w, jb, pr.lo.w)], touches(jb, pr.lo.w, pr.hi.w)));
}

// dq = scale · dS·K from the scratch the dk/dv pass wrote (blocks a pair does not touch read 0).
@compute @workgroup_size(WG)
fn flash_bwd_dq_ds(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let nu = p.lq * rep();
  let bk = block(wid, nwg, nu, 4u * WG);
  if (bk.x >= p.hkv) { return; }
  let g = bk.x;
  let ub = bk.y + 4u * li;
  let pr = pairs(g, ub);
  let own = union4(pr.lo, pr.hi);
  let all = union_range(own, li);
  var acc: array<mat4x4f, MAXC>;
  for (var c = 0u; c < DC; c++) { acc[c] = mat4x4f(); }
  for (var j0 = all.x; j0 < all.y; j0 += KT) {
    workgroupBarrier();
    stage_kv(j0, all.y, g, li, false);
    workgroupBarrier();
    for (var b = 0u; b < KT; b += 8u) {
      let jb = j0 + b;
      if (jb >= own.y || jb + 8u <= own.x) { continue; }
      let d0 = ds_block(pr, jb);
      var d1 = mat4x4f();
      if (TWO) { d1 = ds_block(pr, jb + 4u); }
      for (var c = 0u; c < DC; c++) {
        var x = acc[c] + mcol(b * DC + c) * d0;
        if (TWO) { x += mcol((b + 4u) * DC + c) * d1; }
        acc[c] = x;
      }
    }
  }
  for (var r = 0u; r < 4u; r++) {
    if (ub + r >= nu) { break; }
    for (var c = 0u; c < DC; c++) { stdq(pr.rows[r], c, acc[c][r] * p.scale); }
  }
}

// Stage query rows [u0, u0 + KT) of head h: q (ta), dy (tb), (lse, delta) (tl), (lo, hi, flat row) (tp).
fn stage_pairs(u0: u32, end: u32, h: u32, li: u32) {
  for (var e = li; e < KT * DC; e += WG) {
    let u = u0 + e / DC;
    let c = e % DC;
    let row = min(u, end - 1u) * p.hq + h;
    ta[e] = select(vec4f(0.0), ldq(row, c), u < end);
    tb[e] = select(vec4f(0.0), lddy(row, c), u < end);
  }
  for (var t = li; t < KT; t += WG) {
    let u = u0 + t;
    let row = min(u, end - 1u) * p.hq + h;
    let e = ld_in[row];
    let kr = select(vec2u(0u, 0u), cut(u, vec2u(u32(e.z), u32(e.w))), u < end);
    tl[t] = e.xy;
    tp[t] = vec4u(kr, row, 0u);
  }
}

// Query rows that see key j: causal: i + q_off >= j; varlen: j's segment (from i >= j if causal).
fn key_rows(j: u32) -> vec2u {
  if (j >= p.lk) { return vec2u(0u, 0u); }
  if (p.varlen == 0u) { return vec2u(min(select(0u, j - p.q_off, j > p.q_off), p.lq), p.lq); }
  let e = ld_in[j * p.hq]; // row j's segment (varlen has lq == lk)
  var s = vec2u(u32(e.z), u32(e.w));
  if (p.causal != 0u && s.y > s.x) { s.x = j; }
  return s;
}

// P and dS (column t = key jb + t, component r = staged pair b + r) from the scores and dP;
// with a scratch, pair r's dS over the 4 keys goes to it.
struct Grads { p: mat4x4f, ds: mat4x4f }
fn key_grads(b: u32, jb: u32, s: mat4x4f, dp: mat4x4f) -> Grads {
  let lse4 = vec4f(tl[b].x, tl[b + 1u].x, tl[b + 2u].x, tl[b + 3u].x);
  let del4 = vec4f(tl[b].y, tl[b + 1u].y, tl[b + 2u].y, tl[b + 3u].y);
  let lo4 = vec4u(tp[b].x, tp[b + 1u].x, tp[b + 2u].x, tp[b + 3u].x);
  let hi4 = vec4u(tp[b].y, tp[b + 1u].y, tp[b + 2u].y, tp[b + 3u].y);
  // key jb + t visible to pair r
  let w0 = (vec4u(jb) >= lo4) & (vec4u(jb) < hi4);
  let w1 = (vec4u(jb + 1u) >= lo4) & (vec4u(jb + 1u) < hi4);
  let w2 = (vec4u(jb + 2u) >= lo4) & (vec4u(jb + 2u) < hi4);
  let w3 = (vec4u(jb + 3u) >= lo4) & (vec4u(jb + 3u) < hi4);
  var o: Grads;
  o.p = mat4x4f(select(vec4f(0.0), exp(s[0] * p.scale - lse4), w0), select(vec4f(0.0), exp(s[1] * p.scale - lse4), w1),
                select(vec4f(0.0), exp(s[2] * p.scale - lse4), w2), select(vec4f(0.0), exp(s[3] * p.scale - lse4), w3));
  o.ds = mat4x4f(o.p[0] * (dp[0] - del4), o.p[1] * (dp[1] - del4), o.p[2] * (dp[2] - del4), o.p[3] * (dp[3] - del4));
  if (p.w4 != 0u) {
    let dt = transpose(o.ds); // row r = pair r's dS over the 4 keys
    for (var r = 0u; r < 4u; r++) {
      let e = tp[b + r];
      if (touches(jb, e.x, e.y)) { ds[ds_at(e.z, jb, e.x)] = dt[r]; }
    }
  }
  return o;
}

// Keys jb..jb+3 (jb = first key of the workgroup + 4·li) of kv head g, query head h: head h's
// share dv_j = Σ_i P_ij dy_i, dk_j = scale · Σ_i P_ij (dy_i·v_j − delta_i) q_i over the rows i that
// see j, and dS into the scratch if p.w4 > 0.
@compute @workgroup_size(WG)
fn flash_bwd_dkdv(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let bk = block(wid, nwg, p.lk, 4u * WG);
  if (bk.x >= p.hq) { return; }
  let h = bk.x;
  let g = h / rep();
  let jb = bk.y + 4u * li;
  let kl = p.lk - 1u;
  let krows = vec4u(min(jb, kl), min(jb + 1u, kl), min(jb + 2u, kl), min(jb + 3u, kl)) * p.hkv + vec4u(g);
  let r0 = key_rows(jb); let r1 = key_rows(jb + 1u); let r2 = key_rows(jb + 2u); let r3 = key_rows(jb + 3u);
  let own = union4(vec4u(r0.x, r1.x, r2.x, r3.x), vec4u(r0.y, r1.y, r2.y, r3.y)); // query rows
  let all = union_range(own, li);
  var dka: array<mat4x4f, MAXC>; // column t = key jb + t
  var dva: array<mat4x4f, MAXC>;
  for (var c = 0u; c < DC; c++) { dka[c] = mat4x4f(); dva[c] = mat4x4f(); }
  for (var u0 = all.x; u0 < all.y; u0 += KT) {
    workgroupBarrier();
    stage_pairs(u0, all.y, h, li);
    workgroupBarrier();
    for (var b = 0u; b < KT; b += 8u) {
      let ubk = u0 + b;
      if (ubk >= own.y || ubk + 8u <= own.x) { continue; }
      // column t = scores / dP of key jb + t against pairs ubk.. (s0, dp0) and ubk+4.. (s1, dp1)
      var s0 = mat4x4f();
      var dp0 = mat4x4f();
      var s1 = mat4x4f();
      var dp1 = mat4x4f();
      for (var c = 0u; c < DC; c++) {
        let a = b * DC + c;
        let km = mat4x4f(ldk(krows.x, c), ldk(krows.y, c), ldk(krows.z, c), ldk(krows.w, c));
        let vm = mat4x4f(ldv(krows.x, c), ldv(krows.y, c), ldv(krows.z, c), ldv(krows.w, c));
        s0 += transpose(mcol(a)) * km;
        dp0 += transpose(mcolb(a)) * vm;
        if (TWO) {
          s1 += transpose(mcol(a + 4u * DC)) * km;
          dp1 += transpose(mcolb(a + 4u * DC)) * vm;
        }
      }
      let g0 = key_grads(b, jb, s0, dp0);
      var g1: Grads;
      if (TWO) { g1 = key_grads(b + 4u, jb, s1, dp1); }
      for (var c = 0u; c < DC; c++) {
        let a = b * DC + c;
        var x = dva[c] + mcolb(a) * g0.p;
        var y = dka[c] + mcol(a) * g0.ds;
        if (TWO) {
          x += mcolb(a + 4u * DC) * g1.p;
          y += mcol(a + 4u * DC) * g1.ds;
        }
        dva[c] = x;
        dka[c] = y;
      }
    }
  }
  for (var t = 0u; t < 4u; t++) {
    if (jb + t >= p.lk) { break; }
    let o = (jb + t) * p.hq + h; // head h's share (= dk's row when rep == 1)
    for (var c = 0u; c < DC; c++) { stdk(o, c, dka[c][t] * p.scale); stdv(o, c, dva[c][t]); }
  }
}

// dk[j, g] = Σ over the query heads of group g of their shares, in head order (one thread per
// VT of dk: a vec4, or one element for the scalar rows).
@compute @workgroup_size(64)
fn flash_bwd_group_sum(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = (wid.x + wid.y * nwg.x) * 64u + li;
  let w = row_vts();
  if (t >= p.lk * p.hkv * w) { return; }
  let rp = rep();
  let base = (t / w) * rp * w + t % w; // share (j·hq + g·rep) of dk row j·hkv + g
  var a = VT(0.0);
  var b = VT(0.0);
  for (var x = 0u; x < rp; x++) { a += dkh[base + x * w]; b += dvh[base + x * w]; }
  dk[t] = a;
  dv[t] = b;
}
