// Matmul with an NF4 weight W [N, K] (bitsandbytes' 4-bit NormalFloat, src/gpu/nf4.ts), dequantised
// inside the kernel: no full-precision copy of W ever exists. f32 accumulation.
//   forward         y  = alpha · x·Wᵀ (+ bias) (+ beta·y)    x [M, K]  → y [M, N]
//   backward input  dx = alpha · dy·W (+ beta·dx)             dy [M, N] → dx [M, K]
// (W is frozen: there is no dW.) Both are C(m, j) = Σ_l A(m, l) · B(l, j) with A row-major [M, L]
// and B(l, j) = W element `woff + l·sbl + j·sbj` of the flattened weight: forward l = k, j = n
// (sbl = 1, sbj = K); backward l = n, j = k (sbl = K, sbj = 1).
//
// W element i (flattened, row-major, as bitsandbytes quantises it): code = nibble i of the packed
// bytes (byte i >> 1; the first of a pair in the HIGH nibble; bytes little-endian in u32 words),
// block b = i >> bshift (blocks run over the flattened tensor, so a block may straddle rows when K
// is not a multiple of the block size), w = qmap[code] · absmax(b), the f32 product rounded to the
// quant state's dtype (bf16 / f16 / none) exactly as dequantize_4bit's `.to(dtype)` does.
// absmax(b) = absmax[b], or with double quantisation dyn[q8[b]] · nabs[b >> nbshift] + offset.
//
// Entry points: fwd_reg / bwd_reg (register-blocked, 4x4 per thread, no workgroup memory: the
// SwiftShader choice) and fwd_tiled / bwd_tiled (64x64 tiles through workgroup memory, W
// dequantised once per tile element: real GPUs); `dequant` writes W as f32 (tests).

struct Params {
  M: u32, N: u32, L: u32,   // C is [M, N]; L = the reduced size
  flags: u32,               // bit 0 bias, bit 1 beta != 0, bit 2 nested absmax, bits 3-4 rounding (0 f32, 1 bf16, 2 f16)
  alpha: f32, beta: f32,
  woff: u32, sbl: u32, sbj: u32,
  bshift: u32, nbshift: u32,
  offset: f32,              // nested absmax offset (mean of the 4-bit blocks' absmax)
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> codes: array<u32>;
@group(0) @binding(3) var<storage, read> absf: array<f32>;   // f32 absmax, or (nested) the q8 codes as bytes in u32 words
@group(0) @binding(4) var<storage, read> nabs: array<f32>;   // nested absmax (nested only)
@group(0) @binding(5) var<storage, read> qmap: array<f32>;   // [0, 16): the 4-bit map; [16, 272): the nested 8-bit map
@group(0) @binding(6) var<storage, read> bias: array<f32>;
@group(0) @binding(7) var<storage, read_write> c: array<f32>;

override WG: u32 = 64u;
override TX: u32 = 16u;

fn absmax(b: u32) -> f32 {
  if ((p.flags & 4u) == 0u) { return absf[b]; }
  let q = (bitcast<u32>(absf[b >> 2u]) >> ((b & 3u) * 8u)) & 255u;
  // two roundings, as torch: code[q] * absmax2 (f32), then + offset (f32)
  let s = qmap[16u + q] * nabs[b >> p.nbshift];
  return s + p.offset;
}

fn roundTo(v: f32) -> f32 {
  let r = (p.flags >> 3u) & 3u;
  if (r == 1u) {
    let u = bitcast<u32>(v);
    return bitcast<f32>((u + 0x7fffu + ((u >> 16u) & 1u)) & 0xffff0000u);
  }
  if (r == 2u) {
    // round to nearest even f16 by hand (quantizeToF16 may truncate): 13 dropped mantissa bits,
    // or a fixed 2^-24 step below the f16 normal range (WGSL round() is half-to-even)
    if (abs(v) < 6.103515625e-5) { return round(v * 16777216.0) / 16777216.0; }
    let u = bitcast<u32>(v);
    return bitcast<f32>((u + 0xfffu + ((u >> 13u) & 1u)) & 0xffffe000u);
  }
  return v;
}

// W element i of the flattened weight, given its block's absmax
fn wa(i: u32, am: f32) -> f32 {
  let word = codes[i >> 3u];
  let sh = ((i >> 1u) & 3u) * 8u + select(4u, 0u, (i & 1u) == 1u);
  return roundTo(qmap[(word >> sh) & 15u] * am);
}

fn w(i: u32) -> f32 { return wa(i, absmax(i >> p.bshift)); }

fn store(m: u32, n: u32, v: f32) {
  if (m >= p.M || n >= p.N) { return; }
  let i = m * p.N + n;
  var r = p.alpha * v;
  if ((p.flags & 1u) != 0u) { r += bias[n]; }
  if ((p.flags & 2u) != 0u) { r += p.beta * c[i]; }
  c[i] = r;
}

// register-blocked: WG threads, TX along j, each a 4x4 block of C; rows/cols clamped, never stored
fn reg(wid: vec3u, li: u32, sbl: u32, sbj: u32) {
  let ty = WG / TX;
  let j0 = (wid.x * TX + li % TX) * 4u;
  let m0 = (wid.y * ty + li / TX) * 4u;
  if (j0 >= p.N || m0 >= p.M) { return; }
  let ra = vec4u(min(m0, p.M - 1u), min(m0 + 1u, p.M - 1u), min(m0 + 2u, p.M - 1u), min(m0 + 3u, p.M - 1u)) * p.L;
  let rb = vec4u(min(j0, p.N - 1u), min(j0 + 1u, p.N - 1u), min(j0 + 2u, p.N - 1u), min(j0 + 3u, p.N - 1u)) * sbj + p.woff;
  var c0 = vec4f(0.0); var c1 = vec4f(0.0); var c2 = vec4f(0.0); var c3 = vec4f(0.0);
  // each column's absmax is recomputed only when its block changes (every 64 steps of the
  // forward's contiguous K; uniform across threads when K is a multiple of the block size)
  var cb = vec4u(0xffffffffu); var ca = vec4f(0.0);
  for (var l = 0u; l < p.L; l++) {
    let x = vec4f(a[ra.x + l], a[ra.y + l], a[ra.z + l], a[ra.w + l]);
    let i = rb + vec4u(l * sbl);
    let b = i >> vec4u(p.bshift);
    if (b.x != cb.x) { cb.x = b.x; ca.x = absmax(b.x); }
    if (b.y != cb.y) { cb.y = b.y; ca.y = absmax(b.y); }
    if (b.z != cb.z) { cb.z = b.z; ca.z = absmax(b.z); }
    if (b.w != cb.w) { cb.w = b.w; ca.w = absmax(b.w); }
    let wv = vec4f(wa(i.x, ca.x), wa(i.y, ca.y), wa(i.z, ca.z), wa(i.w, ca.w));
    c0 += x.x * wv; c1 += x.y * wv; c2 += x.z * wv; c3 += x.w * wv;
  }
  let cs = array<vec4f, 4>(c0, c1, c2, c3);
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) { store(m0 + i, j0 + j, cs[i][j]); }
  }
}

@compute @workgroup_size(WG)
fn fwd_reg(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) { reg(wid, li, 1u, p.L); }

@compute @workgroup_size(WG)
fn bwd_reg(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) { reg(wid, li, p.N, 1u); }

// tiled: 16x16 threads, a 64x64 block of C, L in steps of 16; thread (tx, ty) owns rows ty + 16i
// and columns tx + 16j. The B tile is dequantised while it is loaded.
const BK: u32 = 16u;
var<workgroup> As: array<f32, 1024>; // [BK][64] A(m, l) at l*64 + m
var<workgroup> Bs: array<f32, 1024>; // [BK][64] B(l, j) at l*64 + j

fn tiled(wid: vec3u, li: u32, sbl: u32, sbj: u32) {
  let tx = li % 16u; let ty = li / 16u;
  let bm = wid.y * 64u; let bn = wid.x * 64u;
  // consecutive threads walk the contiguous dimension of W (l when sbl == 1, else j)
  let lFast = sbl == 1u;
  var c0 = vec4f(0.0); var c1 = vec4f(0.0); var c2 = vec4f(0.0); var c3 = vec4f(0.0);
  for (var l0 = 0u; l0 < p.L; l0 += BK) {
    for (var r = 0u; r < 4u; r++) {
      let e = li + 256u * r;
      let am = e / 16u; let al = e % 16u;
      let gm = bm + am; let gl = l0 + al;
      As[al * 64u + am] = select(0.0, a[min(gm, p.M - 1u) * p.L + min(gl, p.L - 1u)], gm < p.M && gl < p.L);
      let bj = select(e % 64u, e / 16u, lFast); let bl = select(e / 64u, e % 16u, lFast);
      let gj = bn + bj; let gl2 = l0 + bl;
      var v = 0.0;
      if (gj < p.N && gl2 < p.L) { v = w(p.woff + gl2 * sbl + gj * sbj); }
      Bs[bl * 64u + bj] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let x = vec4f(As[kk * 64u + ty], As[kk * 64u + ty + 16u], As[kk * 64u + ty + 32u], As[kk * 64u + ty + 48u]);
      let wv = vec4f(Bs[kk * 64u + tx], Bs[kk * 64u + tx + 16u], Bs[kk * 64u + tx + 32u], Bs[kk * 64u + tx + 48u]);
      c0 += x.x * wv; c1 += x.y * wv; c2 += x.z * wv; c3 += x.w * wv;
    }
    workgroupBarrier();
  }
  let rows = vec4u(bm + ty, bm + ty + 16u, bm + ty + 32u, bm + ty + 48u);
  let cs = array<vec4f, 4>(c0, c1, c2, c3);
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) { store(rows[i], bn + tx + 16u * j, cs[i][j]); }
  }
}

@compute @workgroup_size(256)
fn fwd_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) { tiled(wid, li, 1u, p.L); }

@compute @workgroup_size(256)
fn bwd_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) { tiled(wid, li, p.N, 1u); }

// c[i] = W element woff + i, i < M (tests: the in-kernel dequantisation against the CPU, bit for bit)
@compute @workgroup_size(64)
fn dequant(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let i = gid.x + gid.y * nw.x * 64u;
  if (i >= p.M) { return; }
  c[i] = w(p.woff + i);
}
