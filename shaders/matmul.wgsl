// C[b] = alpha · opA(A[b]) · opB(B[b]) + beta · C[b] (+ bias[n]), all f32 math.
// A(m,k) and B(k,n) are addressed through strides, so one kernel serves y = x·Wᵀ (NT),
// dx = dy·W (NN) and dW = dyᵀ·x (TN). B may be packed bf16 (frozen base weights): element i is
// the low half of word i>>1 when i is even, the high half when odd; widened with a shift.
//
// Entry points (each binds only what it uses, see src/ops/matmul.ts):
//   nt4, nn4, tn4  register-blocked, no workgroup memory, vec4 loads; need the reduced / output
//                  dims that vec4 loads run along to be multiples of 4. Fastest on SwiftShader,
//                  where workgroupBarrier is costly and every lane is a CPU SIMD slot.
//   gen            register-blocked, scalar strided loads: any shape or layout.
//   tiled          64x64 tile through workgroup memory, 4x4 per thread (for real GPUs).
// A thread owns a 4x4 block of C. Tiles stay at 4x4: an 8x8 register tile with workgroup memory
// made SwiftShader's compiler eat ~24 GB. Loops are never unrolled by hand beyond 4.

struct Params {
  M: u32, N: u32, K: u32,
  flags: u32,          // bit 0: add bias[n]; bit 1: beta != 0 (read C)
  alpha: f32, beta: f32,
  sam: u32, sak: u32,  // A(m,k) = A[a0 + m*sam + k*sak]
  sbk: u32, sbn: u32,  // B(k,n) = B[b0 + k*sbk + n*sbn]
  sab: u32, sbb: u32, scb: u32, // per-batch offsets (elements) of A, B, C
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> a4: array<vec4f>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> b4: array<vec4f>;
@group(0) @binding(5) var<storage, read> bh: array<u32>;
@group(0) @binding(6) var<storage, read> bh4: array<vec2u>;
@group(0) @binding(7) var<storage, read> bias: array<f32>;
@group(0) @binding(8) var<storage, read_write> c: array<f32>;

// B is packed bf16 (pipeline constant; binds bh / bh4 instead of b / b4)
override BF16: bool = false;
// register kernels: WG threads per workgroup, TX of them along n, WG / TX along m
override WG: u32 = 64u;
override TX: u32 = 16u;

fn bf16lo(w: u32) -> f32 { return bitcast<f32>(w << 16u); }
fn bf16hi(w: u32) -> f32 { return bitcast<f32>(w & 0xffff0000u); }

// B element i (scalar path)
fn ldb(i: u32) -> f32 {
  if (BF16) {
    let w = bh[i >> 1u];
    return select(bf16lo(w), bf16hi(w), (i & 1u) == 1u);
  }
  return b[i];
}
// B elements 4i..4i+3 (vec4 path)
fn ldb4(i: u32) -> vec4f {
  if (BF16) {
    let w = bh4[i];
    return vec4f(bf16lo(w.x), bf16hi(w.x), bf16lo(w.y), bf16hi(w.y));
  }
  return b4[i];
}

fn store(z: u32, m: u32, n: u32, v: f32) {
  if (m >= p.M || n >= p.N) { return; }
  let i = z * p.scb + m * p.N + n;
  var r = p.alpha * v;
  if ((p.flags & 1u) != 0u) { r += bias[n]; }
  if ((p.flags & 2u) != 0u) { r += p.beta * c[i]; }
  c[i] = r;
}

fn store4(z: u32, m: u32, n0: u32, v: vec4f) {
  store(z, m, n0, v.x);
  store(z, m, n0 + 1u, v.y);
  store(z, m, n0 + 2u, v.z);
  store(z, m, n0 + 3u, v.w);
}

// WG threads: TX along n, WG/TX along m; each thread a 4x4 block
fn origin(wid: vec3u, li: u32) -> vec2u {
  let ty = WG / TX;
  return vec2u((wid.x * TX + li % TX) * 4u, (wid.y * ty + li / TX) * 4u); // (n0, m0)
}

// y = x·Wᵀ: A [M,K] and B stored [N,K] (both K-contiguous), K % 4 == 0
@compute @workgroup_size(WG)
fn nt4(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let o = origin(wid, li);
  let n0 = o.x; let m0 = o.y;
  if (n0 >= p.N || m0 >= p.M) { return; }
  let K4 = p.K / 4u;
  let az = wid.z * p.sab / 4u; let bz = wid.z * p.sbb / 4u;
  let ra0 = az + min(m0, p.M - 1u) * K4; let ra1 = az + min(m0 + 1u, p.M - 1u) * K4;
  let ra2 = az + min(m0 + 2u, p.M - 1u) * K4; let ra3 = az + min(m0 + 3u, p.M - 1u) * K4;
  let rb0 = bz + min(n0, p.N - 1u) * K4; let rb1 = bz + min(n0 + 1u, p.N - 1u) * K4;
  let rb2 = bz + min(n0 + 2u, p.N - 1u) * K4; let rb3 = bz + min(n0 + 3u, p.N - 1u) * K4;
  var c0 = vec4f(0.0); var c1 = vec4f(0.0); var c2 = vec4f(0.0); var c3 = vec4f(0.0);
  for (var k = 0u; k < K4; k++) {
    let x0 = a4[ra0 + k]; let x1 = a4[ra1 + k]; let x2 = a4[ra2 + k]; let x3 = a4[ra3 + k];
    let w0 = ldb4(rb0 + k); let w1 = ldb4(rb1 + k); let w2 = ldb4(rb2 + k); let w3 = ldb4(rb3 + k);
    c0 += vec4f(dot(x0, w0), dot(x0, w1), dot(x0, w2), dot(x0, w3));
    c1 += vec4f(dot(x1, w0), dot(x1, w1), dot(x1, w2), dot(x1, w3));
    c2 += vec4f(dot(x2, w0), dot(x2, w1), dot(x2, w2), dot(x2, w3));
    c3 += vec4f(dot(x3, w0), dot(x3, w1), dot(x3, w2), dot(x3, w3));
  }
  store4(wid.z, m0, n0, c0); store4(wid.z, m0 + 1u, n0, c1);
  store4(wid.z, m0 + 2u, n0, c2); store4(wid.z, m0 + 3u, n0, c3);
}

// dx = dy·W: A [M,K] K-contiguous, B stored [K,N] N-contiguous; K % 4 == 0, N % 4 == 0
@compute @workgroup_size(WG)
fn nn4(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let o = origin(wid, li);
  let n0 = o.x; let m0 = o.y;
  if (n0 >= p.N || m0 >= p.M) { return; }
  let K4 = p.K / 4u; let N4 = p.N / 4u;
  let az = wid.z * p.sab / 4u;
  let ra0 = az + min(m0, p.M - 1u) * K4; let ra1 = az + min(m0 + 1u, p.M - 1u) * K4;
  let ra2 = az + min(m0 + 2u, p.M - 1u) * K4; let ra3 = az + min(m0 + 3u, p.M - 1u) * K4;
  var rb = wid.z * p.sbb / 4u + n0 / 4u;
  var c0 = vec4f(0.0); var c1 = vec4f(0.0); var c2 = vec4f(0.0); var c3 = vec4f(0.0);
  for (var k = 0u; k < K4; k++) {
    let x0 = a4[ra0 + k]; let x1 = a4[ra1 + k]; let x2 = a4[ra2 + k]; let x3 = a4[ra3 + k];
    let w0 = ldb4(rb); let w1 = ldb4(rb + N4); let w2 = ldb4(rb + 2u * N4); let w3 = ldb4(rb + 3u * N4);
    rb += 4u * N4;
    c0 += x0.x * w0 + x0.y * w1 + x0.z * w2 + x0.w * w3;
    c1 += x1.x * w0 + x1.y * w1 + x1.z * w2 + x1.w * w3;
    c2 += x2.x * w0 + x2.y * w1 + x2.z * w2 + x2.w * w3;
    c3 += x3.x * w0 + x3.y * w1 + x3.z * w2 + x3.w * w3;
  }
  store4(wid.z, m0, n0, c0); store4(wid.z, m0 + 1u, n0, c1);
  store4(wid.z, m0 + 2u, n0, c2); store4(wid.z, m0 + 3u, n0, c3);
}

// dW = dyᵀ·x: A stored [K,M] M-contiguous, B stored [K,N] N-contiguous; M % 4 == 0, N % 4 == 0
@compute @workgroup_size(WG)
fn tn4(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let o = origin(wid, li);
  let n0 = o.x; let m0 = o.y;
  if (n0 >= p.N || m0 >= p.M) { return; }
  let M4 = p.M / 4u; let N4 = p.N / 4u;
  var ra = wid.z * p.sab / 4u + m0 / 4u;
  var rb = wid.z * p.sbb / 4u + n0 / 4u;
  var c0 = vec4f(0.0); var c1 = vec4f(0.0); var c2 = vec4f(0.0); var c3 = vec4f(0.0);
  var k = 0u;
  for (; k + 4u <= p.K; k += 4u) {
    let x0 = a4[ra]; let x1 = a4[ra + M4]; let x2 = a4[ra + 2u * M4]; let x3 = a4[ra + 3u * M4];
    let w0 = ldb4(rb); let w1 = ldb4(rb + N4); let w2 = ldb4(rb + 2u * N4); let w3 = ldb4(rb + 3u * N4);
    ra += 4u * M4; rb += 4u * N4;
    c0 += x0.x * w0 + x1.x * w1 + x2.x * w2 + x3.x * w3;
    c1 += x0.y * w0 + x1.y * w1 + x2.y * w2 + x3.y * w3;
    c2 += x0.z * w0 + x1.z * w1 + x2.z * w2 + x3.z * w3;
    c3 += x0.w * w0 + x1.w * w1 + x2.w * w2 + x3.w * w3;
  }
  for (; k < p.K; k++) {
    let x0 = a4[ra]; let w0 = ldb4(rb);
    ra += M4; rb += N4;
    c0 += x0.x * w0; c1 += x0.y * w0; c2 += x0.z * w0; c3 += x0.w * w0;
  }
  store4(wid.z, m0, n0, c0); store4(wid.z, m0 + 1u, n0, c1);
  store4(wid.z, m0 + 2u, n0, c2); store4(wid.z, m0 + 3u, n0, c3);
}

// Any shape, any layout: scalar strided loads, out-of-range rows/cols clamped (never stored).
@compute @workgroup_size(WG)
fn gen(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let o = origin(wid, li);
  let n0 = o.x; let m0 = o.y;
  if (n0 >= p.N || m0 >= p.M) { return; }
  let az = wid.z * p.sab; let bz = wid.z * p.sbb;
  let ra = vec4u(min(m0, p.M - 1u), min(m0 + 1u, p.M - 1u), min(m0 + 2u, p.M - 1u), min(m0 + 3u, p.M - 1u)) * p.sam + az;
  let rb = vec4u(min(n0, p.N - 1u), min(n0 + 1u, p.N - 1u), min(n0 + 2u, p.N - 1u), min(n0 + 3u, p.N - 1u)) * p.sbn + bz;
  var c0 = vec4f(0.0); var c1 = vec4f(0.0); var c2 = vec4f(0.0); var c3 = vec4f(0.0);
  for (var k = 0u; k < p.K; k++) {
    let ka = k * p.sak; let kb = k * p.sbk;
    let x = vec4f(a[ra.x + ka], a[ra.y + ka], a[ra.z + ka], a[ra.w + ka]);
    let w = vec4f(ldb(rb.x + kb), ldb(rb.y + kb), ldb(rb.z + kb), ldb(rb.w + kb));
    c0 += x.x * w; c1 += x.y * w; c2 += x.z * w; c3 += x.w * w;
  }
  store4(wid.z, m0, n0, c0); store4(wid.z, m0 + 1u, n0, c1);
  store4(wid.z, m0 + 2u, n0, c2); store4(wid.z, m0 + 3u, n0, c3);
}

// Shared-memory tiled: 16x16 threads, 64x64 block of C, K in steps of 16. Thread (tx, ty) owns
// rows ty + 16i and columns tx + 16j (strided, so neighbouring threads read neighbouring words).
const BK: u32 = 16u;
var<workgroup> As: array<f32, 1024>; // [BK][64] A(m,k) at k*64 + m
var<workgroup> Bs: array<f32, 1024>; // [BK][64] B(k,n) at k*64 + n

@compute @workgroup_size(256)
fn tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let tx = li % 16u; let ty = li / 16u;
  let bm = wid.y * 64u; let bn = wid.x * 64u;
  let az = wid.z * p.sab; let bz = wid.z * p.sbb;
  // coalesced tile loads: consecutive threads walk the contiguous dimension
  let aK = p.sak == 1u; let bN = p.sbn == 1u;
  var c0 = vec4f(0.0); var c1 = vec4f(0.0); var c2 = vec4f(0.0); var c3 = vec4f(0.0);
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    for (var l = 0u; l < 4u; l++) {
      let e = li + 256u * l;
      let am = select(e % 64u, e / 16u, aK); let ak = select(e / 64u, e % 16u, aK);
      let gm = bm + am; let gk = k0 + ak;
      As[ak * 64u + am] = select(0.0, a[az + min(gm, p.M - 1u) * p.sam + min(gk, p.K - 1u) * p.sak], gm < p.M && gk < p.K);
      let bn_ = select(e / 16u, e % 64u, bN); let bk = select(e % 16u, e / 64u, bN);
      let gn = bn + bn_; let gk2 = k0 + bk;
      Bs[bk * 64u + bn_] = select(0.0, ldb(bz + min(gk2, p.K - 1u) * p.sbk + min(gn, p.N - 1u) * p.sbn), gn < p.N && gk2 < p.K);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let x = vec4f(As[kk * 64u + ty], As[kk * 64u + ty + 16u], As[kk * 64u + ty + 32u], As[kk * 64u + ty + 48u]);
      let w = vec4f(Bs[kk * 64u + tx], Bs[kk * 64u + tx + 16u], Bs[kk * 64u + tx + 32u], Bs[kk * 64u + tx + 48u]);
      c0 += x.x * w; c1 += x.y * w; c2 += x.z * w; c3 += x.w * w;
    }
    workgroupBarrier();
  }
  let rows = vec4u(bm + ty, bm + ty + 16u, bm + ty + 32u, bm + ty + 48u);
  let cs = array<vec4f, 4>(c0, c1, c2, c3);
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) { store(wid.z, rows[i], bn + tx + 16u * j, cs[i][j]); }
  }
}

// ==== variant: subgroups ====
// Everything below a "==== variant" line is compiled only into the module of that variant, with
// its `enable` directive prepended (src/ops/matmul.ts), and runs only after the startup self-test
// (src/gpu/selftest.ts) has matched it against the f32 path on this adapter.
//
// nt_sg: split-K skinny y = x·Wᵀ for few rows (decode, small batches): a workgroup of 64 threads
// owns row m and columns n0..n0+3; thread t sums k4 ≡ t (mod 64) in vec4 steps, subgroupAdd folds
// each subgroup, one elected lane per subgroup parks the partial at its own local index (so the
// result does not depend on how the adapter lays subgroups out), and thread 0 adds the 64 slots.
// K % 4 == 0, A [M,K] and B [N,K] K-contiguous.
var<workgroup> sgPartial: array<vec4f, 64>;

@compute @workgroup_size(64)
fn nt_sg(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let m = wid.y; let n0 = wid.x * 4u; let z = wid.z;
  let K4 = p.K / 4u;
  let ra = z * p.sab / 4u + min(m, p.M - 1u) * K4;
  let bz = z * p.sbb / 4u;
  let rb0 = bz + min(n0, p.N - 1u) * K4; let rb1 = bz + min(n0 + 1u, p.N - 1u) * K4;
  let rb2 = bz + min(n0 + 2u, p.N - 1u) * K4; let rb3 = bz + min(n0 + 3u, p.N - 1u) * K4;
  var acc = vec4f(0.0);
  for (var k0 = 0u; k0 < K4; k0 += 64u) { // uniform loop: the subgroup op and barriers below stay in uniform control flow
    let k = k0 + li;
    if (k < K4) {
      let x = a4[ra + k];
      acc += vec4f(dot(x, ldb4(rb0 + k)), dot(x, ldb4(rb1 + k)), dot(x, ldb4(rb2 + k)), dot(x, ldb4(rb3 + k)));
    }
  }
  sgPartial[li] = vec4f(0.0);
  workgroupBarrier();
  let s = subgroupAdd(acc);
  if (subgroupElect()) { sgPartial[li] = s; }
  workgroupBarrier();
  if (li == 0u) {
    var t = vec4f(0.0);
    for (var i = 0u; i < 64u; i++) { t += sgPartial[i]; }
    store4(z, m, n0, t);
  }
}

// ==== variant: f16 ====
// tiled_h: the tiled kernel with its workgroup tiles stored as f16 (half the workgroup memory and
// bandwidth) and 4-term f16 dot products accumulated in f32. Used only where it is safe: the
// frozen base's forward y = x·Wᵀ with BF16 weights (|W| ≪ 65504; activations after RMSNorm), never
// for gradients (dy underflows f16). Its self-test tolerance is relative (src/ops/matmul.ts).
var<workgroup> Ah: array<f16, 1024>;
var<workgroup> Bh: array<f16, 1024>;

@compute @workgroup_size(256)
fn tiled_h(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let tx = li % 16u; let ty = li / 16u;
  let bm = wid.y * 64u; let bn = wid.x * 64u;
  let az = wid.z * p.sab; let bz = wid.z * p.sbb;
  let aK = p.sak == 1u; let bN = p.sbn == 1u;
  var c0 = vec4f(0.0); var c1 = vec4f(0.0); var c2 = vec4f(0.0); var c3 = vec4f(0.0);
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    for (var l = 0u; l < 4u; l++) {
      let e = li + 256u * l;
      let am = select(e % 64u, e / 16u, aK); let ak = select(e / 64u, e % 16u, aK);
      let gm = bm + am; let gk = k0 + ak;
      Ah[ak * 64u + am] = f16(select(0.0, a[az + min(gm, p.M - 1u) * p.sam + min(gk, p.K - 1u) * p.sak], gm < p.M && gk < p.K));
      let bn_ = select(e / 16u, e % 64u, bN); let bk = select(e % 16u, e / 64u, bN);
      let gn = bn + bn_; let gk2 = k0 + bk;
      Bh[bk * 64u + bn_] = f16(select(0.0, ldb(bz + min(gk2, p.K - 1u) * p.sbk + min(gn, p.N - 1u) * p.sbn), gn < p.N && gk2 < p.K));
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk += 4u) {
      // 4 k-steps in f16: x[r] and w[c] hold k = kk..kk+3 of row r / column c
      var x: array<vec4h, 4>; var w: array<vec4h, 4>;
      for (var r = 0u; r < 4u; r++) {
        x[r] = vec4h(Ah[kk * 64u + ty + 16u * r], Ah[(kk + 1u) * 64u + ty + 16u * r], Ah[(kk + 2u) * 64u + ty + 16u * r], Ah[(kk + 3u) * 64u + ty + 16u * r]);
        w[r] = vec4h(Bh[kk * 64u + tx + 16u * r], Bh[(kk + 1u) * 64u + tx + 16u * r], Bh[(kk + 2u) * 64u + tx + 16u * r], Bh[(kk + 3u) * 64u + tx + 16u * r]);
      }
      c0 += vec4f(f32(dot(x[0], w[0])), f32(dot(x[0], w[1])), f32(dot(x[0], w[2])), f32(dot(x[0], w[3])));
      c1 += vec4f(f32(dot(x[1], w[0])), f32(dot(x[1], w[1])), f32(dot(x[1], w[2])), f32(dot(x[1], w[3])));
      c2 += vec4f(f32(dot(x[2], w[0])), f32(dot(x[2], w[1])), f32(dot(x[2], w[2])), f32(dot(x[2], w[3])));
      c3 += vec4f(f32(dot(x[3], w[0])), f32(dot(x[3], w[1])), f32(dot(x[3], w[2])), f32(dot(x[3], w[3])));
    }
    workgroupBarrier();
  }
  let rows = vec4u(bm + ty, bm + ty + 16u, bm + ty + 32u, bm + ty + 48u);
  let cs = array<vec4f, 4>(c0, c1, c2, c3);
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) { store(wid.z, rows[i], bn + tx + 16u * j, cs[i][j]); }
  }
}
