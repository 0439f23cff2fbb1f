// Fused lm_head + log-softmax gather: logits = scale · x·Wᵀ are formed one register block at a
// time and folded straight into running statistics, so no logits (or dlogits) tensor ever exists.
//
//   x [T, H] f32 (the scored rows), W [Vs, H] f32 or packed bf16 (one vocabulary shard whose row 0
//   is vocabulary id v0), targets i32 [T].
//   A shard is cut into splits of `split` vocabulary rows; split s of the shard is partial column
//   p0 + s of part [T, P, 4] (P = splits over all shards).
//
//   lmh_fwd      one workgroup per (split, block of 16 rows): per row (max, sumexp relative to
//                it, target logit or 0, first argmax) of the split -> part
//   lmh_combine  one thread per row: fold its P partials in vocabulary order -> logp, lse, argmax
//   lmh_bwd      one workgroup per (split, row block): recompute the split's logits, turn them
//                into g = scale · dlogp · (onehot − softmax) (workgroup memory, 64 ids at a time)
//                and accumulate g·W into dxp [P, T, H], the split's own slice (no atomics)
//   lmh_reduce   one thread per (row, h): dx = Σ_p dxp[p] in order (+ dx when accumulating)
//
// Training forward without the recomputation (H % 4 == 0), flash-attention style with K = V = W:
//   lmh_fwd_e    lmh_fwd plus, per split, the softmax-weighted sum of W rows relative to the
//                split's running max, E_p[r] = Σ_id exp(l − m) · W[id] (rescaled by exp(m_old − m)
//                whenever a block raises the max) -> dxp [P, T, H]
//   lmh_expect   one thread per (row, h): E[r] = Σ_p exp(m_p − m) · E_p[r] / Σ_p exp(m_p − m) · s_p,
//                the expected output embedding under the softmax
//   then dx = scale · dlogp · (W[target] − E) needs no logits at all:
//   lmh_dx_e     dx = (dx when accumulating) − scale · dlogp · E;  lmh_dx_w  dx += scale · dlogp · W[target]
//
// Everything is folded in a fixed order, so results are deterministic. Rows of a thread block
// beyond T, ids beyond the split, ignored targets (< 0 or == ignore) and dlogp == 0 contribute
// nothing. A thread owns 4 rows × 4 ids (the matmul's register block); 16 threads span 64 ids.

const NEG: f32 = -3.0e38;
const NOIDX: u32 = 0xffffffffu;
const WG: u32 = 64u;
const RB: u32 = 16u; // rows per workgroup: 4 row groups of 4
const VB: u32 = 64u; // ids per block: 16 lanes of 4

// W is packed bf16 (two per u32: element i the low half of word i>>1 when i is even)
override BF16: bool = false;
// H % 4 == 0: vec4 loads along H
override VEC: bool = false;

struct Params {
  T: u32,
  H: u32,
  Vs: u32,      // rows of this shard
  v0: u32,      // vocabulary id of shard row 0
  split: u32,   // ids per split (a multiple of VB)
  p0: u32,      // partial column of this shard's split 0
  P: u32,       // partial columns in all
  ignore: i32,  // ignore index (-100)
  scale: f32,   // logits = scale · x·Wᵀ (1 / temperature)
  acc: u32,     // lmh_reduce: add into dx instead of overwriting it
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x1: array<f32>;
@group(0) @binding(2) var<storage, read> x4: array<vec4f>;
// W in three views of one buffer: scalar words, vec2 words (4 bf16), vec4 words (4 f32)
@group(0) @binding(3) var<storage, read> w1: array<u32>;
@group(0) @binding(4) var<storage, read> w2: array<vec2u>;
@group(0) @binding(5) var<storage, read> w4: array<vec4u>;
@group(0) @binding(6) var<storage, read> targets: array<i32>;
@group(0) @binding(7) var<storage, read_write> part: array<f32>;   // [T, P, 4]
@group(0) @binding(8) var<storage, read> part_in: array<f32>;
@group(0) @binding(9) var<storage, read_write> logp: array<f32>;   // [T]
@group(0) @binding(10) var<storage, read_write> lse: array<f32>;   // [T]
@group(0) @binding(11) var<storage, read_write> argmax: array<i32>; // [T]
@group(0) @binding(12) var<storage, read> lse_in: array<f32>;
@group(0) @binding(13) var<storage, read> dlogp_in: array<f32>;
@group(0) @binding(14) var<storage, read_write> dxp: array<f32>;   // [P, T, H]
@group(0) @binding(15) var<storage, read> dxp_in: array<f32>;
@group(0) @binding(16) var<storage, read_write> dx: array<f32>;    // [T, H]
@group(0) @binding(17) var<storage, read> e_in: array<f32>;        // [T, H] expected embedding
@group(0) @binding(18) var<storage, read_write> ep4: array<vec4f>; // lmh_fwd_e: dxp as vec4 (H % 4 == 0)

fn kept(tg: i32) -> bool {
  return tg >= 0 && tg != p.ignore;
}

fn bf16lo(w: u32) -> f32 { return bitcast<f32>(w << 16u); }
fn bf16hi(w: u32) -> f32 { return bitcast<f32>(w & 0xffff0000u); }

// W element i of the shard
fn ldw(i: u32) -> f32 {
  if (BF16) {
    let w = w1[i >> 1u];
    return select(bf16lo(w), bf16hi(w), (i & 1u) == 1u);
  }
  return bitcast<f32>(w1[i]);
}
// W elements 4k..4k+3
fn ldw4(k: u32) -> vec4f {
  if (BF16) {
    let w = w2[k];
    return vec4f(bf16lo(w.x), bf16hi(w.x), bf16lo(w.y), bf16hi(w.y));
  }
  return bitcast<vec4f>(w4[k]);
}

// acc[i][j] = x[r0 + i] · W[c0 + j] (rows / ids clamped into range; callers mask them)
fn dots(r0: u32, c0: u32) -> array<vec4f, 4> {
  let H = p.H;
  let ra = vec4u(min(r0, p.T - 1u), min(r0 + 1u, p.T - 1u), min(r0 + 2u, p.T - 1u), min(r0 + 3u, p.T - 1u));
  let rb = vec4u(min(c0, p.Vs - 1u), min(c0 + 1u, p.Vs - 1u), min(c0 + 2u, p.Vs - 1u), min(c0 + 3u, p.Vs - 1u));
  var c0v = vec4f(0.0); var c1v = vec4f(0.0); var c2v = vec4f(0.0); var c3v = vec4f(0.0);
  if (VEC) {
    let K4 = H / 4u;
    let a0 = ra.x * K4; let a1 = ra.y * K4; let a2 = ra.z * K4; let a3 = ra.w * K4;
    let b0 = rb.x * K4; let b1 = rb.y * K4; let b2 = rb.z * K4; let b3 = rb.w * K4;
    for (var k = 0u; k < K4; k++) {
      let xa = x4[a0 + k]; let xb = x4[a1 + k]; let xc = x4[a2 + k]; let xd = x4[a3 + k];
      let wa = ldw4(b0 + k); let wb = ldw4(b1 + k); let wc = ldw4(b2 + k); let wd = ldw4(b3 + k);
      c0v += vec4f(dot(xa, wa), dot(xa, wb), dot(xa, wc), dot(xa, wd));
      c1v += vec4f(dot(xb, wa), dot(xb, wb), dot(xb, wc), dot(xb, wd));
      c2v += vec4f(dot(xc, wa), dot(xc, wb), dot(xc, wc), dot(xc, wd));
      c3v += vec4f(dot(xd, wa), dot(xd, wb), dot(xd, wc), dot(xd, wd));
    }
  } else {
    let a0 = ra.x * H; let a1 = ra.y * H; let a2 = ra.z * H; let a3 = ra.w * H;
    let b0 = rb.x * H; let b1 = rb.y * H; let b2 = rb.z * H; let b3 = rb.w * H;
    for (var k = 0u; k < H; k++) {
      let xv = vec4f(x1[a0 + k], x1[a1 + k], x1[a2 + k], x1[a3 + k]);
      let wv = vec4f(ldw(b0 + k), ldw(b1 + k), ldw(b2 + k), ldw(b3 + k));
      c0v += xv.x * wv; c1v += xv.y * wv; c2v += xv.z * wv; c3v += xv.w * wv;
    }
  }
  return array<vec4f, 4>(c0v, c1v, c2v, c3v);
}

// (m1, s1, i1) ⊕ (m2, s2, i2): max, sumexp rescaled to it, first index of the max
struct Acc { m: f32, s: f32, i: u32 }
fn combine(a: Acc, b: Acc) -> Acc {
  let m = max(a.m, b.m);
  var s = 0.0;
  if (a.s > 0.0) { s += a.s * exp(a.m - m); }
  if (b.s > 0.0) { s += b.s * exp(b.m - m); }
  var i = min(a.i, b.i);
  if (a.m > b.m) { i = a.i; } else if (b.m > a.m) { i = b.i; }
  return Acc(m, s, i);
}

var<workgroup> wm: array<f32, 256>; // [thread][row of 4]
var<workgroup> ws: array<f32, 256>;
var<workgroup> wi: array<u32, 256>;
var<workgroup> wt: array<f32, 256>;

@compute @workgroup_size(64)
fn lmh_fwd(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let sp = wid.x;
  let ry = li / 16u;
  let vx = li % 16u;
  let r0 = wid.y * RB + ry * 4u;
  let s0 = sp * p.split;
  let s1 = min(s0 + p.split, p.Vs);
  var m = array<f32, 4>(NEG, NEG, NEG, NEG);
  var s = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
  var am = array<u32, 4>(NOIDX, NOIDX, NOIDX, NOIDX);
  var tl = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
  var tg = array<i32, 4>(-1, -1, -1, -1);
  for (var i = 0u; i < 4u; i++) { if (r0 + i < p.T) { tg[i] = targets[r0 + i]; } }
  if (r0 < p.T) {
    for (var c0 = s0 + vx * 4u; c0 < s1; c0 += VB) {
      var acc = dots(r0, c0);
      for (var j = 0u; j < 4u; j++) {
        if (c0 + j >= s1) { break; }
        let id = p.v0 + c0 + j;
        for (var i = 0u; i < 4u; i++) {
          let l = p.scale * acc[i][j];
          // ids rise within a thread: strict > keeps the first maximum
          if (l > m[i]) {
            s[i] = s[i] * exp(m[i] - l) + 1.0;
            m[i] = l;
            am[i] = id;
          } else {
            s[i] += exp(l - m[i]);
          }
          if (tg[i] == i32(id)) { tl[i] = l; }
        }
      }
    }
  }
  for (var i = 0u; i < 4u; i++) {
    wm[li * 4u + i] = m[i];
    ws[li * 4u + i] = s[i];
    wi[li * 4u + i] = am[i];
    wt[li * 4u + i] = tl[i];
  }
  workgroupBarrier();
  // lane 0 of each row group folds its 16 lanes in id order
  if (vx == 0u) {
    for (var i = 0u; i < 4u; i++) {
      let r = r0 + i;
      if (r >= p.T) { break; }
      var a = Acc(NEG, 0.0, NOIDX);
      var t = 0.0;
      for (var l = 0u; l < 16u; l++) {
        let q = (ry * 16u + l) * 4u + i;
        a = combine(a, Acc(wm[q], ws[q], wi[q]));
        t += wt[q]; // only the lane holding the target adds a non-zero
      }
      let o = (r * p.P + p.p0 + sp) * 4u;
      part[o] = a.m;
      part[o + 1u] = a.s;
      part[o + 2u] = t;
      part[o + 3u] = bitcast<f32>(a.i);
    }
  }
}

@compute @workgroup_size(64)
fn lmh_combine(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let r = (wid.x + wid.y * nwg.x) * WG + li;
  if (r >= p.T) { return; }
  var a = Acc(NEG, 0.0, NOIDX);
  var t = 0.0;
  for (var q = 0u; q < p.P; q++) {
    let o = (r * p.P + q) * 4u;
    a = combine(a, Acc(part_in[o], part_in[o + 1u], bitcast<u32>(part_in[o + 3u])));
    t += part_in[o + 2u];
  }
  let l = a.m + log(a.s);
  lse[r] = l;
  logp[r] = select(0.0, t - l, kept(targets[r]));
  argmax[r] = i32(a.i);
}

var<workgroup> gt: array<vec4f, 256>; // g of one block: [id of 64][row group of 4] as vec4 over its rows

@compute @workgroup_size(64)
fn lmh_bwd(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let sp = wid.x;
  let ry = li / 16u;
  let vx = li % 16u;
  let rbase = wid.y * RB;
  let r0 = rbase + ry * 4u;
  let s0 = sp * p.split;
  let s1 = min(s0 + p.split, p.Vs);
  // per own row: coefficient scale·dlogp (0 for rows out of range / ignored), lse, target
  var cf = vec4f(0.0);
  var ls = vec4f(0.0);
  var tg = vec4i(-1);
  for (var i = 0u; i < 4u; i++) {
    let r = r0 + i;
    if (r < p.T && kept(targets[r])) {
      cf[i] = p.scale * dlogp_in[r];
      ls[i] = lse_in[r];
      tg[i] = targets[r];
    }
  }
  let live = r0 < p.T && any(cf != vec4f(0.0));
  let nrows = min(RB, p.T - rbase);
  let dbase = (p.p0 + sp) * p.T * p.H;
  for (var b0 = s0; b0 < s1; b0 += VB) {
    // phase 1: g for ids b0 + 4·vx + j, rows r0..r0+3
    let c0 = b0 + vx * 4u;
    var g = array<vec4f, 4>(vec4f(0.0), vec4f(0.0), vec4f(0.0), vec4f(0.0)); // [id j] over rows
    if (live && c0 < s1) {
      var acc = dots(r0, c0);
      for (var j = 0u; j < 4u; j++) {
        if (c0 + j >= s1) { break; }
        let id = i32(p.v0 + c0 + j);
        let lg = p.scale * vec4f(acc[0][j], acc[1][j], acc[2][j], acc[3][j]);
        let hit = select(vec4f(0.0), vec4f(1.0), tg == vec4i(id));
        g[j] = cf * (hit - exp(lg - ls));
      }
    }
    for (var j = 0u; j < 4u; j++) { gt[(vx * 4u + j) * 4u + ry] = g[j]; }
    workgroupBarrier();
    // phase 2: dxp[rows, h] += Σ_id g[id, rows] · W[id, h]
    let nb = min(VB, s1 - b0);
    if (VEC) {
      // thread (row group ry, lane vx) owns rows r0..r0+3 × h = 4·(vx + 16q) .. +3
      if (r0 < p.T) {
        let K4 = p.H / 4u;
        let nr = min(4u, p.T - r0);
        for (var hq = vx; hq < K4; hq += 16u) {
          var a0 = vec4f(0.0); var a1 = vec4f(0.0); var a2 = vec4f(0.0); var a3 = vec4f(0.0);
          for (var v = 0u; v < nb; v++) {
            let w = ldw4((b0 + v) * K4 + hq);
            let gv = gt[v * 4u + ry];
            a0 += gv.x * w; a1 += gv.y * w; a2 += gv.z * w; a3 += gv.w * w;
          }
          var a = array<vec4f, 4>(a0, a1, a2, a3);
          for (var i = 0u; i < nr; i++) {
            let o = dbase + (r0 + i) * p.H + 4u * hq;
            for (var e = 0u; e < 4u; e++) {
              if (b0 == s0) { dxp[o + e] = a[i][e]; } else { dxp[o + e] += a[i][e]; }
            }
          }
        }
      }
    } else {
      // thread li owns h = li, li + 64, … for all 16 rows
      for (var h = li; h < p.H; h += WG) {
        var a0 = vec4f(0.0); var a1 = vec4f(0.0); var a2 = vec4f(0.0); var a3 = vec4f(0.0);
        for (var v = 0u; v < nb; v++) {
          let w = ldw((b0 + v) * p.H + h);
          a0 += gt[v * 4u] * w; a1 += gt[v * 4u + 1u] * w; a2 += gt[v * 4u + 2u] * w; a3 += gt[v * 4u + 3u] * w;
        }
        var a = array<vec4f, 4>(a0, a1, a2, a3);
        for (var r = 0u; r < nrows; r++) {
          let o = dbase + (rbase + r) * p.H + h;
          let val = a[r / 4u][r % 4u];
          if (b0 == s0) { dxp[o] = val; } else { dxp[o] += val; }
        }
      }
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(64)
fn lmh_reduce(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let e = (wid.x + wid.y * nwg.x) * WG + li;
  let n = p.T * p.H;
  if (e >= n) { return; }
  var a = 0.0;
  if (p.acc == 1u) { a = dx[e]; }
  for (var q = 0u; q < p.P; q++) { a += dxp_in[q * n + e]; }
  dx[e] = a;
}

var<workgroup> rmax: array<f32, 16>;   // running max per row of the workgroup
var<workgroup> ralpha: array<f32, 16>; // rescale of the accumulator for this block

@compute @workgroup_size(64)
fn lmh_fwd_e(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let sp = wid.x;
  let ry = li / 16u;
  let vx = li % 16u;
  let rbase = wid.y * RB;
  let r0 = rbase + ry * 4u;
  let s0 = sp * p.split;
  let s1 = min(s0 + p.split, p.Vs);
  var m = array<f32, 4>(NEG, NEG, NEG, NEG);
  var s = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
  var am = array<u32, 4>(NOIDX, NOIDX, NOIDX, NOIDX);
  var tl = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
  var tg = array<i32, 4>(-1, -1, -1, -1);
  for (var i = 0u; i < 4u; i++) { if (r0 + i < p.T) { tg[i] = targets[r0 + i]; } }
  if (li < 16u) { rmax[li] = NEG; }
  let K4 = p.H / 4u;
  let dbase = (p.p0 + sp) * p.T * p.H;
  for (var b0 = s0; b0 < s1; b0 += VB) {
    // phase 1: logits of ids b0 + 4·vx + j for rows r0..r0+3 into gt; own running statistics
    let c0 = b0 + vx * 4u;
    var lg = array<vec4f, 4>(vec4f(NEG), vec4f(NEG), vec4f(NEG), vec4f(NEG)); // [id j] over rows
    if (r0 < p.T && c0 < s1) {
      var acc = dots(r0, c0);
      for (var j = 0u; j < 4u; j++) {
        if (c0 + j >= s1) { break; }
        let id = p.v0 + c0 + j;
        for (var i = 0u; i < 4u; i++) {
          let l = p.scale * acc[i][j];
          if (r0 + i < p.T) { lg[j][i] = l; }
          if (l > m[i]) {
            s[i] = s[i] * exp(m[i] - l) + 1.0;
            m[i] = l;
            am[i] = id;
          } else {
            s[i] += exp(l - m[i]);
          }
          if (tg[i] == i32(id)) { tl[i] = l; }
        }
      }
    }
    for (var j = 0u; j < 4u; j++) { gt[(vx * 4u + j) * 4u + ry] = lg[j]; }
    workgroupBarrier();
    // phase 1b: one thread per row raises the row's max and turns its 64 logits into exp(l − max)
    if (li < 16u) {
      let g = li / 4u;
      let c = li % 4u;
      var bm = NEG;
      for (var v = 0u; v < VB; v++) { bm = max(bm, gt[v * 4u + g][c]); }
      let mo = rmax[li];
      let mn = max(mo, bm);
      ralpha[li] = select(exp(mo - mn), 0.0, mo <= NEG);
      rmax[li] = mn;
      for (var v = 0u; v < VB; v++) {
        let l = gt[v * 4u + g][c];
        gt[v * 4u + g][c] = select(exp(l - mn), 0.0, l <= NEG);
      }
    }
    workgroupBarrier();
    // phase 2: E_p[rows, h] = alpha · E_p + Σ_id P[id, rows] · W[id, h]
    let nb = min(VB, s1 - b0);
    if (r0 < p.T) {
      let nr = min(4u, p.T - r0);
      let al = vec4f(ralpha[ry * 4u], ralpha[ry * 4u + 1u], ralpha[ry * 4u + 2u], ralpha[ry * 4u + 3u]);
      for (var hq = vx; hq < K4; hq += 16u) {
        var a0 = vec4f(0.0); var a1 = vec4f(0.0); var a2 = vec4f(0.0); var a3 = vec4f(0.0);
        for (var v = 0u; v < nb; v++) {
          let w = ldw4((b0 + v) * K4 + hq);
          let gv = gt[v * 4u + ry];
          a0 += gv.x * w; a1 += gv.y * w; a2 += gv.z * w; a3 += gv.w * w;
        }
        // rows r0.. r0+3 of E_p at h = 4·hq (vec4-aligned: H % 4 == 0)
        let o = (dbase + r0 * p.H) / 4u + hq;
        let first = b0 == s0;
        ep4[o] = select(al.x * ep4[o], vec4f(0.0), first) + a0;
        if (nr > 1u) { ep4[o + K4] = select(al.y * ep4[o + K4], vec4f(0.0), first) + a1; }
        if (nr > 2u) { ep4[o + 2u * K4] = select(al.z * ep4[o + 2u * K4], vec4f(0.0), first) + a2; }
        if (nr > 3u) { ep4[o + 3u * K4] = select(al.w * ep4[o + 3u * K4], vec4f(0.0), first) + a3; }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    wm[li * 4u + i] = m[i];
    ws[li * 4u + i] = s[i];
    wi[li * 4u + i] = am[i];
    wt[li * 4u + i] = tl[i];
  }
  workgroupBarrier();
  if (vx == 0u) {
    for (var i = 0u; i < 4u; i++) {
      let r = r0 + i;
      if (r >= p.T) { break; }
      var a = Acc(NEG, 0.0, NOIDX);
      var t = 0.0;
      for (var l = 0u; l < 16u; l++) {
        let q = (ry * 16u + l) * 4u + i;
        a = combine(a, Acc(wm[q], ws[q], wi[q]));
        t += wt[q];
      }
      let o = (r * p.P + p.p0 + sp) * 4u;
      // the split's max is the workgroup's running max of the row: E_p is relative to it
      part[o] = a.m;
      part[o + 1u] = a.s;
      part[o + 2u] = t;
      part[o + 3u] = bitcast<f32>(a.i);
    }
  }
}

// E[r, h] from the per-split E_p (relative to each split's max) and the partial statistics
@compute @workgroup_size(64)
fn lmh_expect(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let e = (wid.x + wid.y * nwg.x) * WG + li;
  let n = p.T * p.H;
  if (e >= n) { return; }
  let r = e / p.H;
  var mx = NEG;
  for (var q = 0u; q < p.P; q++) { mx = max(mx, part_in[(r * p.P + q) * 4u]); }
  var den = 0.0;
  var num = 0.0;
  for (var q = 0u; q < p.P; q++) {
    let o = (r * p.P + q) * 4u;
    let f = exp(part_in[o] - mx);
    den += f * part_in[o + 1u];
    num += f * dxp_in[q * n + e];
  }
  dx[e] = num / den;
}

fn coef(r: u32) -> f32 {
  let tg = targets[r];
  return select(0.0, p.scale * dlogp_in[r], kept(tg));
}

// dx = (dx when accumulating) − scale · dlogp · E
@compute @workgroup_size(64)
fn lmh_dx_e(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let e = (wid.x + wid.y * nwg.x) * WG + li;
  if (e >= p.T * p.H) { return; }
  var a = 0.0;
  if (p.acc == 1u) { a = dx[e]; }
  dx[e] = a - coef(e / p.H) * e_in[e];
}

// dx[r] += scale · dlogp · W[target] for the rows whose target lies in this shard
@compute @workgroup_size(64)
fn lmh_dx_w(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let e = (wid.x + wid.y * nwg.x) * WG + li;
  if (e >= p.T * p.H) { return; }
  let r = e / p.H;
  let tg = targets[r];
  if (tg < i32(p.v0) || tg >= i32(p.v0 + p.Vs)) { return; }
  dx[e] += coef(r) * ldw((u32(tg) - p.v0) * p.H + e % p.H);
}
