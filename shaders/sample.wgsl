// Next-token sampling on the GPU, one workgroup per row of logits [n, V], with the same math as
// the CPU sampler (src/model/generate.ts sampleTokenU): logits / temperature → top-k → top-p →
// one draw from the uniform u[row] the CPU RNG produced for that row. Out: the token id and its
// log-probability under log_softmax(logits / temperature) over the whole vocabulary (what GRPO /
// PPO score), so only 8 bytes per row come back.
//
//   floor = max − span·T: tokens below it are dropped first (their mass is < e^−30 each)
//   plain (no top-k, no top-p): thread t sums p = exp((l − max)/T) over its contiguous id range;
//     one thread scans the 256 partial sums in order and finds the range holding u·total; that
//     range's thread walks its ids in order (the CPU walks all ids in order: the same cumulative
//     sum, only rounded differently)
//   top-k / top-p: candidates are extracted one per round in (logit desc, id asc) order — the
//     CPU's sort order — by a max-reduction over the ids after the previous pick; top-k stops at k,
//     top-p alone stops once the mass so far reaches topP of the total. Then one thread does the
//     CPU's keep / walk loop over the candidates in that order.
//   More than KMAX candidates needed: id −1 (the caller samples that row on the CPU).
// Every reduction has a fixed order, so a row's result is deterministic.

const KMAX: u32 = 128u;
const NOIDX: u32 = 0xffffffffu;
const NEG: f32 = -3.0e38;
const WG: u32 = 256u;

struct Params {
  n: u32,
  V: u32,
  k: u32,       // top-k (0: off)
  temp: f32,    // > 0
  topP: f32,    // 1: off
  span: f32,    // 30
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>; // [n, V]
@group(0) @binding(2) var<storage, read> uni: array<f32>;    // [n] uniforms in [0, 1)
@group(0) @binding(3) var<storage, read_write> ids: array<i32>; // [n]
@group(0) @binding(4) var<storage, read_write> lps: array<f32>; // [n]

var<workgroup> rv: array<f32, WG>;
var<workgroup> ri: array<u32, WG>;
var<workgroup> rs: array<f32, WG>;
var<workgroup> cl: array<f32, KMAX>;
var<workgroup> ci: array<u32, KMAX>;
var<workgroup> bl: f32;
var<workgroup> bi: u32;
var<workgroup> stop: u32;
var<workgroup> tsel: u32;
var<workgroup> fsel: f32;

// (a, ia) ranks before (b, ib): larger logit, then smaller id
fn ahead(a: f32, ia: u32, b: f32, ib: u32) -> bool {
  return a > b || (a == b && ia < ib);
}

// workgroup max in (logit desc, id asc) order of (v, i) per thread -> bl, bi
fn reduce_best(li: u32, v: f32, i: u32) {
  rv[li] = v;
  ri[li] = i;
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (li < h && ahead(rv[li + h], ri[li + h], rv[li], ri[li])) {
      rv[li] = rv[li + h];
      ri[li] = ri[li + h];
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    bl = rv[0];
    bi = ri[0];
  }
  workgroupBarrier();
}

// workgroup sum of two values per thread, fixed tree order -> rv[0], rs[0]
fn reduce_sum2(li: u32, a: f32, b: f32) {
  rv[li] = a;
  rs[li] = b;
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (li < h) {
      rv[li] += rv[li + h];
      rs[li] += rs[li + h];
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn sample_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.n) { return; } // uniform per workgroup
  let base = row * p.V;
  let T = p.temp;
  // max (first id of it)
  var m = NEG;
  var mi = NOIDX;
  for (var i = li; i < p.V; i += WG) {
    let l = logits[base + i];
    if (l > m) { m = l; mi = i; }
  }
  reduce_best(li, m, mi);
  let mx = workgroupUniformLoad(&bl);
  let floor = mx - p.span * T;
  // Σ exp((l − max)/T) over every id (log-prob normaliser) and over ids at or above the floor
  let chunk = (p.V + WG - 1u) / WG;
  let c0 = min(p.V, li * chunk);
  let c1 = min(p.V, c0 + chunk);
  var sAll = 0.0;
  var sFl = 0.0;
  for (var i = c0; i < c1; i++) {
    let l = logits[base + i];
    let e = exp((l - mx) / T);
    sAll += e;
    if (l >= floor) { sFl += e; }
  }
  let mySum = sFl;
  reduce_sum2(li, sAll, sFl);
  let lnZ = log(workgroupUniformLoad(&rv[0]));
  let totalFl = workgroupUniformLoad(&rs[0]);
  workgroupBarrier(); // every thread has read rv[0] / rs[0] before they are reused
  let u = uni[row];
  var pick = -1;
  if (p.k == 0u && p.topP >= 1.0) {
    // plain temperature: partial sums per contiguous range, scanned in order by thread 0
    rs[li] = mySum;
    workgroupBarrier();
    if (li == 0u) {
      let goal = u * totalFl;
      var acc = 0.0;
      var t = 0u;
      var last = 0u;
      var found = false;
      for (; t < WG; t++) {
        if (rs[t] > 0.0) {
          last = t;
          if (goal < acc + rs[t]) { found = true; break; }
        }
        acc += rs[t];
      }
      if (!found) { t = last; acc = 0.0; for (var q = 0u; q < last; q++) { acc += rs[q]; } }
      tsel = t;
      fsel = acc;
      stop = select(0u, 1u, found);
    }
    workgroupBarrier();
    if (li == tsel) {
      let goal = u * totalFl;
      var acc = fsel;
      var last = c0;
      var chosen = -1;
      for (var i = c0; i < c1; i++) {
        let l = logits[base + i];
        if (l < floor) { continue; }
        last = i;
        acc += exp((l - mx) / T);
        if (stop == 1u && goal < acc) { chosen = i32(i); break; }
      }
      if (chosen < 0) { chosen = i32(last); }
      ids[row] = chosen;
      lps[row] = (logits[base + u32(chosen)] - mx) / T - lnZ;
    }
    return;
  }
  // candidates in rank order, one per round
  let kmax = select(KMAX, min(p.k, KMAX), p.k > 0u);
  var pl = 3.0e38;
  var pi = NOIDX;
  var cnt = 0u;
  var mass = 0.0;
  // top-p alone: each token's mass is at most the best's (1), so a nucleus that needs more than
  // KMAX tokens is evident up front when KMAX < topP · total: hand the row back at once
  var overflow = p.k == 0u && f32(KMAX) < p.topP * totalFl;
  for (var j = 0u; j < select(kmax, 0u, overflow); j++) {
    var b = NEG;
    var bj = NOIDX;
    for (var i = li; i < p.V; i += WG) {
      let l = logits[base + i];
      // after the previous pick in rank order, at or above the floor
      if (l >= floor && ahead(pl, pi, l, i) && (bj == NOIDX || ahead(l, i, b, bj))) { b = l; bj = i; }
    }
    reduce_best(li, b, bj);
    let got = workgroupUniformLoad(&bi);
    if (got == NOIDX) { break; }
    pl = workgroupUniformLoad(&bl);
    pi = got;
    if (li == 0u) {
      cl[j] = pl;
      ci[j] = pi;
    }
    cnt = j + 1u;
    if (p.k == 0u) {
      // top-p alone: the next token is kept only while the mass before it is below topP
      mass += exp((pl - mx) / T);
      if (mass / totalFl >= p.topP) { break; }
      if (cnt == KMAX) { overflow = true; }
    }
  }
  workgroupBarrier();
  if (li != 0u) { return; }
  if (overflow || (p.k > KMAX)) {
    ids[row] = -1;
    lps[row] = 0.0;
    return;
  }
  // the CPU's keep / walk over the candidates in rank order
  var total = 0.0;
  if (p.k > 0u) { for (var j = 0u; j < cnt; j++) { total += exp((cl[j] - mx) / T); } } else { total = totalFl; }
  var keep = cnt;
  if (p.topP < 1.0) {
    var before = 0.0;
    for (var j = 0u; j < cnt; j++) {
      if (j > 0u && before / total >= p.topP) { keep = j; break; }
      before += exp((cl[j] - mx) / T);
    }
    total = 0.0;
    for (var j = 0u; j < keep; j++) { total += exp((cl[j] - mx) / T); }
  }
  var goal = u * total;
  var chosen = keep - 1u;
  for (var j = 0u; j < keep; j++) {
    goal -= exp((cl[j] - mx) / T);
    if (goal < 0.0) { chosen = j; break; }
  }
  ids[row] = i32(ci[chosen]);
  lps[row] = (cl[chosen] - mx) / T - lnZ;
}
