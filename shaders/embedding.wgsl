// Embedding gather out[t] = E[ids[t]] and its backward dE[ids[t]] += dy[t].
// E is bound as u32 words: f32 bits, or packed bf16 when E_BF16 (widened here). A table too big
// for one binding comes as row shards: one dispatch per shard, rows [row_start, row_start+rows).
// Ids outside every shard give a zero row (written by the first shard's dispatch, zero_others=1).
// The backward is deterministic without float atomics: `links` finds, for every token, the next
// token with the same id and whether it is the first; `scatter` lets the first occurrence walk
// that chain, summing dy in token order, and adds the sum to its row of dE.

override E_BF16: bool = false;

struct Params { tokens: u32, hidden: u32, row_start: u32, rows: u32, zero_others: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> links_out: array<i32>; // [2·T]: next same-id token (−1: none), is-first
@group(0) @binding(5) var<storage, read> links: array<i32>;
@group(0) @binding(6) var<storage, read> dy: array<f32>;
@group(0) @binding(7) var<storage, read_write> dtable: array<f32>;

fn table_at(i: u32) -> f32 {
  if (E_BF16) {
    let word = table[i >> 1u];
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u));
  }
  return bitcast<f32>(table[i]);
}

fn index(wid: vec3u, nwg: vec3u, li: u32) -> u32 { return (wid.x + wid.y * nwg.x) * 256u + li; }

@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i >= p.tokens * p.hidden) { return; }
  let t = i / p.hidden;
  let h = i % p.hidden;
  let row = ids[t] - i32(p.row_start);
  if (row >= 0 && row < i32(p.rows)) {
    out[i] = table_at(u32(row) * p.hidden + h);
  } else if (p.zero_others == 1u) {
    out[i] = 0.0;
  }
}

@compute @workgroup_size(256)
fn find_links(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = index(wid, nwg, li);
  if (t >= p.tokens) { return; }
  let id = ids[t];
  var first = 1;
  for (var u = 0u; u < t; u++) { if (ids[u] == id) { first = 0; break; } }
  var next = -1;
  for (var u = t + 1u; u < p.tokens; u++) { if (ids[u] == id) { next = i32(u); break; } }
  links_out[2u * t] = next;
  links_out[2u * t + 1u] = first;
}

@compute @workgroup_size(256)
fn scatter(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i >= p.tokens * p.hidden) { return; }
  let t = i / p.hidden;
  let h = i % p.hidden;
  if (links[2u * t + 1u] == 0) { return; }
  let row = ids[t] - i32(p.row_start);
  if (row < 0 || row >= i32(p.rows)) { return; }
  var acc = 0.0;
  var u = i32(t);
  loop {
    acc += dy[u32(u) * p.hidden + h];
    u = links[2u * u32(u)];
    if (u < 0) { break; }
  }
  let o = u32(row) * p.hidden + h;
  dtable[o] = dtable[o] + acc;
}
