// Token embedding gather and its deterministic scatter-add backward (shaders/embedding.wgsl).
// The table may be f32 or packed bf16, and may come as row shards ([V₀, H], [V₁, H], ...) when
// it is larger than one storage binding allows (the 3B table is 622 MB in bf16).
import code from '../../shaders/embedding.wgsl?raw';
import { dispatch, grid, kernel } from '../gpu/kernel.ts';
import { empty, zeros, type Tensor } from '../gpu/tensor.ts';

const k = (entry: string, bf16 = false) => kernel('embedding.wgsl', code, entry, { E_BF16: bf16 ? 1 : 0 });

function shardsOf(what: string, table: Tensor | Tensor[], dtypes: string[]): { shards: Tensor[]; hidden: number; vocab: number } {
  const shards = Array.isArray(table) ? table : [table];
  if (!shards.length) throw new Error(`${what}: no table shards`);
  const hidden = shards[0].shape[shards[0].shape.length - 1];
  let vocab = 0;
  for (const s of shards) {
    if (s.shape.length !== 2 || s.shape[1] !== hidden) throw new Error(`${what}: table shard "${s.name}" [${s.shape}] must be [rows, ${hidden}]`);
    if (!dtypes.includes(s.dtype)) throw new Error(`${what}: table shard "${s.name}" must be ${dtypes.join(' or ')}, got ${s.dtype}`);
    vocab += s.shape[0];
  }
  return { shards, hidden, vocab };
}

function checkIds(what: string, ids: Tensor): void {
  if (ids.dtype !== 'i32') throw new Error(`${what}: ids "${ids.name}" must be i32, got ${ids.dtype}`);
}

/** out[..., :] = E[ids[...], :] → [...ids.shape, H] f32; ids outside [0, V) give zero rows. */
export function embedding(ids: Tensor, table: Tensor | Tensor[]): Tensor {
  checkIds('embedding', ids);
  const { shards, hidden } = shardsOf('embedding', table, ['f32', 'bf16']);
  const T = ids.numel, n = T * hidden;
  const out = empty([...ids.shape, hidden], 'f32', 'embedding.out');
  let start = 0;
  shards.forEach((s, i) => {
    if (n) dispatch(k('gather', s.dtype === 'bf16'), [ids, s, out], grid(Math.ceil(n / 256)), [T, hidden, start, s.shape[0], i === 0 ? 1 : 0]);
    start += s.shape[0];
  });
  return out;
}

/** dE[ids[t]] += dy[t] into existing f32 table gradient(s) (same sharding as the table). */
export function embeddingBackwardAccumulate(ids: Tensor, dy: Tensor, dTable: Tensor | Tensor[]): void {
  checkIds('embeddingBackward', ids);
  const { shards, hidden } = shardsOf('embeddingBackward', dTable, ['f32']);
  const T = ids.numel;
  if (dy.dtype !== 'f32' || dy.numel !== T * hidden) throw new Error(`embeddingBackward: dy "${dy.name}" [${dy.shape}] must be f32 [${ids.shape}, ${hidden}]`);
  if (!T) return;
  const links = empty([2 * T], 'i32', 'embedding.links');
  dispatch(k('find_links'), [ids, undefined, undefined, links], grid(Math.ceil(T / 256)), [T, hidden, 0, 0, 0]);
  let start = 0;
  for (const s of shards) {
    dispatch(k('scatter'), [ids, undefined, undefined, undefined, links, dy, s], grid(Math.ceil((T * hidden) / 256)), [T, hidden, start, s.shape[0], 0]);
    start += s.shape[0];
  }
  links.release(); // recorded work still reads it first: later users of the buffer run after
}

/** dE [vocab, H] = scatter-add of dy rows by ids (a new zeroed tensor). */
export function embeddingBackward(ids: Tensor, dy: Tensor, vocab: number): Tensor {
  const hidden = dy.shape[dy.shape.length - 1];
  const dE = zeros([vocab, hidden], 'f32', 'embedding.dE');
  embeddingBackwardAccumulate(ids, dy, dE);
  return dE;
}
