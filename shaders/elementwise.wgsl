// Small generic helpers: residual add, scale, fill, and row gather/scatter by an index (the vision
// window reorder gathers merged-token rows by window_index and scatters them back; image
// embeddings are scattered into the rows of the image-pad tokens).

struct Params { n: u32, width: u32, alpha: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> acc: array<f32>;
@group(0) @binding(5) var<storage, read> idx: array<i32>;

fn index(wid: vec3u, nwg: vec3u, li: u32) -> u32 { return (wid.x + wid.y * nwg.x) * 256u + li; }

// out = a + alpha · b
@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i >= p.n) { return; }
  out[i] = a[i] + p.alpha * b[i];
}

// acc += alpha · b
@compute @workgroup_size(256)
fn add_inplace(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i >= p.n) { return; }
  acc[i] = acc[i] + p.alpha * b[i];
}

// acc *= alpha
@compute @workgroup_size(256)
fn scale_inplace(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i >= p.n) { return; }
  acc[i] = acc[i] * p.alpha;
}

// acc = alpha
@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i >= p.n) { return; }
  acc[i] = p.alpha;
}

// out[r, c] = a[idx[r], c] (a negative index gives a zero row); n = rows · width
@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i >= p.n) { return; }
  let src = idx[i / p.width];
  var v = 0.0;
  if (src >= 0) { v = a[u32(src) * p.width + i % p.width]; }
  out[i] = v;
}

// acc[idx[r], c] = a[r, c] (negative indices skipped)
@compute @workgroup_size(256)
fn scatter_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i >= p.n) { return; }
  let dst = idx[i / p.width];
  if (dst >= 0) { acc[u32(dst) * p.width + i % p.width] = a[i]; }
}
