// Small generic helpers (shaders/elementwise.wgsl): residual add, scale, fill, copy, and row
// gather/scatter by an i32 index (vision window reorder and its inverse; image embeddings into
// the image-pad rows of inputs_embeds).
import code from '../../shaders/elementwise.wgsl?raw';
import { dispatch, encoder, grid, kernel } from '../gpu/kernel.ts';
import { empty, type Tensor } from '../gpu/tensor.ts';

const k = (entry: string) => kernel('elementwise.wgsl', code, entry);
const wgs = (n: number) => grid(Math.ceil(n / 256));

function f32(what: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.dtype !== 'f32') throw new Error(`${what}: "${t.name}" must be f32, got ${t.dtype}`);
}
function sameSize(what: string, a: Tensor, b: Tensor): void {
  if (a.numel !== b.numel) throw new Error(`${what}: "${a.name}" [${a.shape}] and "${b.name}" [${b.shape}] differ in size`);
}

/** a + alpha · b (new tensor, a's shape). */
export function add(a: Tensor, b: Tensor, alpha = 1): Tensor {
  f32('add', a, b);
  sameSize('add', a, b);
  const out = empty(a.shape, 'f32', `${a.name}+`);
  if (a.numel) dispatch(k('add'), [a, b, out], wgs(a.numel), [a.numel, 0, alpha], 'uuf');
  return out;
}

/** acc += alpha · b (in place; acc and b must be different tensors). */
export function addInPlace(acc: Tensor, b: Tensor, alpha = 1): void {
  f32('addInPlace', acc, b);
  sameSize('addInPlace', acc, b);
  if (acc.buffer === b.buffer) throw new Error(`addInPlace: "${acc.name}" and "${b.name}" share a buffer; use scaleInPlace(acc, 1 + alpha)`);
  if (acc.numel) dispatch(k('add_inplace'), [undefined, b, undefined, acc], wgs(acc.numel), [acc.numel, 0, alpha], 'uuf');
}

export function scaleInPlace(t: Tensor, s: number): void {
  f32('scaleInPlace', t);
  if (t.numel) dispatch(k('scale_inplace'), [undefined, undefined, undefined, t], wgs(t.numel), [t.numel, 0, s], 'uuf');
}

export function fill(t: Tensor, value: number): void {
  f32('fill', t);
  if (t.numel) dispatch(k('fill'), [undefined, undefined, undefined, t], wgs(t.numel), [t.numel, 0, value], 'uuf');
}

/** A copy in a new buffer (recorded in order with the dispatches). */
export function copy(t: Tensor, name = `${t.name}.copy`): Tensor {
  const out = empty(t.shape, t.dtype, name);
  const bytes = Math.ceil(t.bindSize / 4) * 4;
  if (bytes) encoder().copyBufferToBuffer(t.buffer, 0, out.buffer, 0, bytes);
  return out;
}

/**
 * out[i, :] = src[index[i], :], src viewed as [rows, width] with width = its last dim (pass a
 * view, e.g. hidden [N, C] as [N/4, 4C], to move 4-row groups). Negative indices give zero rows.
 */
export function gatherRows(src: Tensor, index: Tensor): Tensor {
  f32('gatherRows', src);
  if (index.dtype !== 'i32') throw new Error(`gatherRows: index "${index.name}" must be i32, got ${index.dtype}`);
  const width = src.shape[src.shape.length - 1];
  const out = empty([index.numel, ...src.shape.slice(1)], 'f32', `${src.name}.gathered`);
  const n = index.numel * width;
  if (n) dispatch(k('gather_rows'), [src, undefined, out, undefined, index], wgs(n), [n, width, 0], 'uuf');
  return out;
}

/** dst[index[i], :] = src[i, :] in place (rows of width = dst's last dim; negative indices skipped). */
export function scatterRows(src: Tensor, index: Tensor, dst: Tensor): void {
  f32('scatterRows', src, dst);
  if (index.dtype !== 'i32') throw new Error(`scatterRows: index "${index.name}" must be i32, got ${index.dtype}`);
  const width = dst.shape[dst.shape.length - 1];
  if (src.numel !== index.numel * width) throw new Error(`scatterRows: src "${src.name}" [${src.shape}] should be ${index.numel} rows of width ${width} (dst "${dst.name}" [${dst.shape}])`);
  if (src.buffer === dst.buffer) throw new Error(`scatterRows: src and dst "${dst.name}" share a buffer`);
  const n = src.numel;
  if (n) dispatch(k('scatter_rows'), [src, undefined, undefined, dst, index], wgs(n), [n, width, 0], 'uuf');
}
