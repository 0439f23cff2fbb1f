// Next-token sampling on the GPU (shaders/sample.wgsl): for logits [n, V] on the GPU and one
// uniform per row (drawn by the caller's CPU RNG, so the RNG stream is the CPU sampler's), the
// token id and its log-probability under log_softmax(logits / temperature). Same math and order
// as ops/cpu/sample.ts sampleTokenU; what can differ is f32 vs f64 rounding of the cumulative
// mass, so a draw whose u·total falls within ~1e-6 of a boundary between two tokens may take the
// neighbour. A row that needs more than SAMPLE_KMAX candidates (top-k above it, or top-p alone
// over a flat distribution) comes back as id −1: sample it on the CPU with the same uniform.
import code from '../../shaders/sample.wgsl?raw';
import { dispatch, grid, kernel } from '../gpu/kernel.ts';
import { GpuError } from '../gpu/device.ts';
import { empty, type Tensor } from '../gpu/tensor.ts';

export const SAMPLE_KMAX = 128;
const K = kernel('sample.wgsl', code, 'sample_rows');

export interface GpuSampleOptions { temperature: number; topK?: number; topP?: number }

export function checkSampleOptions(o: GpuSampleOptions, what = 'sample'): void {
  const problems: string[] = [];
  if (!(o.temperature > 0 && Number.isFinite(o.temperature))) problems.push(`temperature must be > 0 (greedy is argmax), got ${o.temperature}`);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0)) problems.push(`topK must be a non-negative integer, got ${o.topK}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) problems.push(`topP must be in (0, 1], got ${o.topP}`);
  if (problems.length) throw new GpuError(`${what}: ${problems.join('; ')}`);
}

/** ids i32 [n] (−1: sample on the CPU) and log-probs f32 [n] of rows of logits [n, V] given uniforms [n]. */
export function sampleRows(logits: Tensor, uniforms: Tensor, o: GpuSampleOptions): { ids: Tensor; logprobs: Tensor } {
  checkSampleOptions(o, 'sampleRows');
  if (logits.dtype !== 'f32' || logits.shape.length !== 2) throw new GpuError(`sampleRows: logits "${logits.name}" must be f32 [n, V], got ${logits.dtype} [${logits.shape}]`);
  const [n, V] = logits.shape;
  if (uniforms.dtype !== 'f32' || uniforms.numel !== n) throw new GpuError(`sampleRows: uniforms "${uniforms.name}" must be f32 [${n}], got ${uniforms.dtype} [${uniforms.shape}]`);
  const ids = empty([n], 'i32', 'sample.ids'), logprobs = empty([n], 'f32', 'sample.logprobs');
  if (n && V) dispatch(K, [logits, uniforms, ids, logprobs], grid(n), [n, V, o.topK ?? 0, o.temperature, o.topP ?? 1, 30], 'uuufff');
  return { ids, logprobs };
}
