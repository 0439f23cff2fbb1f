// Log-softmax gather and masked cross-entropy over the vocabulary in chunks, so that a model
// never holds a whole [T, V] logits tensor: each chunk [T, Vc] (at vocab offset voff) folds into a
// running per-row state (max, sumexp relative to max, target logit, argmax); finish turns the
// state into logp / logsumexp; backward recomputes softmax per chunk from the final logsumexp.
// A whole-logits call is the one-chunk case. Row r of a chunk is logits[r·ld + col0 + c], c < vc.
// Rows whose target is negative or equals p.ignore are "ignored": logp = 0, no gradient.

const NEG: f32 = -3.0e38;
const NOIDX: u32 = 0xffffffffu;
override WG: u32 = 64u; // power of two

struct Params {
  t: u32,       // rows
  vc: u32,      // columns in this chunk
  ld: u32,      // row stride of the logits buffer
  col0: u32,    // first column of the chunk in that buffer
  voff: u32,    // vocab id of chunk column 0
  first: u32,   // 1: start the running state from scratch
  ignore: i32,  // ignore index (-100)
  dloss: f32,   // upstream gradient of the loss (ce_dlogp)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;  // [T, 4]: max, sumexp, target logit, argmax
@group(0) @binding(4) var<storage, read_write> logp: array<f32>;   // [T]
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;    // [T]
@group(0) @binding(6) var<storage, read_write> argmax: array<i32>; // [T]
@group(0) @binding(7) var<storage, read_write> dlogp: array<f32>;  // [T]
@group(0) @binding(8) var<storage, read_write> dlogits: array<f32>; // [T, vc]
@group(0) @binding(9) var<storage, read_write> stats: array<f32>;  // loss, numKept, numCorrect, sumNll
@group(0) @binding(10) var<storage, read_write> loss: array<f32>;  // [1]
// earlier outputs as later inputs: read-only, so they may alias other inputs
@group(0) @binding(11) var<storage, read> lse_in: array<f32>;
@group(0) @binding(12) var<storage, read> dlogp_in: array<f32>;
@group(0) @binding(13) var<storage, read> stats_in: array<f32>;

fn kept(tg: i32) -> bool {
  return tg >= 0 && tg != p.ignore;
}

var<workgroup> wm: array<f32, WG>;
var<workgroup> ws: array<f32, WG>;
var<workgroup> wi: array<u32, WG>;

// (m1, s1, i1) ⊕ (m2, s2, i2): max, sumexp rescaled to the max, first index of the max.
struct Acc { m: f32, s: f32, i: u32 }
fn combine(a: Acc, b: Acc) -> Acc {
  let m = max(a.m, b.m);
  let s = a.s * exp(a.m - m) + b.s * exp(b.m - m);
  var i = min(a.i, b.i);
  if (a.m > b.m) { i = a.i; } else if (b.m > a.m) { i = b.i; }
  return Acc(m, s, i);
}

// One workgroup per row.
@compute @workgroup_size(WG)
fn lsg_chunk(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= p.t) { return; } // uniform per workgroup
  let base = r * p.ld + p.col0;
  var a = Acc(NEG, 0.0, NOIDX);
  for (var c = li; c < p.vc; c += WG) {
    let x = logits[base + c];
    if (x > a.m) {
      a.s = a.s * exp(a.m - x) + 1.0;
      a.m = x;
      a.i = p.voff + c;
    } else {
      a.s += exp(x - a.m);
    }
  }
  wm[li] = a.m;
  ws[li] = a.s;
  wi[li] = a.i;
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (li < h) {
      let b = combine(Acc(wm[li], ws[li], wi[li]), Acc(wm[li + h], ws[li + h], wi[li + h]));
      wm[li] = b.m;
      ws[li] = b.s;
      wi[li] = b.i;
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    var c = Acc(wm[0], ws[0], wi[0]);
    var tl = 0.0;
    if (p.first == 0u) {
      c = combine(Acc(state[4u * r], state[4u * r + 1u], u32(state[4u * r + 3u])), c);
      tl = state[4u * r + 2u];
    }
    let tg = targets[r];
    if (tg >= i32(p.voff) && tg < i32(p.voff + p.vc)) { tl = logits[base + u32(tg) - p.voff]; }
    state[4u * r] = c.m;
    state[4u * r + 1u] = c.s;
    state[4u * r + 2u] = tl;
    state[4u * r + 3u] = f32(c.i); // exact below 2^24
  }
}

fn finish_row(r: u32) -> f32 {
  let l = state[4u * r] + log(state[4u * r + 1u]);
  let lp = select(0.0, state[4u * r + 2u] - l, kept(targets[r]));
  lse[r] = l;
  logp[r] = lp;
  argmax[r] = i32(state[4u * r + 3u]);
  return lp;
}

// One thread per row.
@compute @workgroup_size(WG)
fn lsg_finish(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let r = (wid.x + wid.y * nwg.x) * WG + li;
  if (r >= p.t) { return; }
  _ = finish_row(r);
}

var<workgroup> wn: array<f32, WG>;
var<workgroup> wc: array<f32, WG>;

// One workgroup for all rows: per-row results plus the masked mean, kept count and correct count
// (fixed reduction order, so deterministic).
@compute @workgroup_size(WG)
fn ce_finish(@builtin(local_invocation_index) li: u32) {
  var sum = 0.0;
  var n = 0.0;
  var nc = 0.0;
  for (var r = li; r < p.t; r += WG) {
    let lp = finish_row(r);
    let tg = targets[r];
    if (kept(tg)) {
      sum -= lp;
      n += 1.0;
      if (i32(state[4u * r + 3u]) == tg) { nc += 1.0; }
    }
  }
  ws[li] = sum;
  wn[li] = n;
  wc[li] = nc;
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (li < h) {
      ws[li] += ws[li + h];
      wn[li] += wn[li + h];
      wc[li] += wc[li + h];
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    let l = select(0.0, ws[0] / wn[0], wn[0] > 0.0);
    loss[0] = l;
    stats[0] = l;
    stats[1] = wn[0];
    stats[2] = wc[0];
    stats[3] = ws[0];
  }
}

// dlogp of the mean loss: −dloss / numKept on kept rows.
@compute @workgroup_size(WG)
fn ce_dlogp(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let r = (wid.x + wid.y * nwg.x) * WG + li;
  if (r >= p.t) { return; }
  let n = stats_in[1];
  dlogp[r] = select(0.0, -p.dloss / n, kept(targets[r]) && n > 0.0);
}

// dlogits[r, c] = dlogp[r]·(onehot − exp(x − lse[r])) for one chunk; one thread per element.
@compute @workgroup_size(WG)
fn lsg_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let e = (wid.x + wid.y * nwg.x) * WG + li;
  if (e >= p.t * p.vc) { return; }
  let r = e / p.vc;
  let c = e % p.vc;
  let g = dlogp_in[r];
  var y = 0.0;
  if (g != 0.0) {
    let x = logits[r * p.ld + p.col0 + c];
    let hit = select(0.0, 1.0, targets[r] == i32(p.voff + c));
    y = g * (hit - exp(x - lse_in[r]));
  }
  dlogits[e] = y;
}
