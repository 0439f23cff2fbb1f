// "Within BF16 rounding": how closely a merged folder, loaded as a plain model (no adapter), scores
// like its base with the adapter on. Shared by export/merged.test.ts (a Node export) and
// e2e/merged.test.ts (the studio's download), so both hold the merge to the same rule.
//
// On the CPU reference (f64 sums), three ways: base + adapter (unmerged), the merge in f32 before
// rounding, and the BF16 merged folder. The f32 merge shows the formula is peft's (an orientation
// or scaling slip is O(1)); the BF16 one measures exactly what the rounding costs. Then our GPU
// model: the merged folder loaded like any checkpoint, against the base with the adapter on (and
// off, for the adapter's own effect).
// Tolerance: what BF16 rounding of the merged weights costs on the exact reference (each weight
// moves by ≤ 2⁻⁹ of itself, which is all that separates the two models), twice over for headroom,
// plus the GPU's f32 kernel noise against f64 (≤ 1e-3 on these models: the parity tolerance of
// the model cases). The adapter must move the log-probs far more than that (`effect`), or the
// check would prove nothing.
import { bf16ToF32 } from '../gpu/bf16.ts';
import { CpuModel } from '../model/cpu/model.ts';
import type { LoraAdapter } from '../model/lora.ts';
import { Qwen2_5_VL, type SeqInput } from '../model/qwen2_5_vl.ts';
import type { ModelSource } from '../model/sources/source.ts';
import { loadModel, type LoadedModel, type WeightMap } from '../model/weights.ts';
import { mergeLinear } from './merged.ts';

export interface MergedParity {
  /** GPU: max |Δ log p| of the merged folder (no adapter) against base + adapter */
  gap: number;
  /** CPU: max |Δ log p| the BF16 rounding of the merged weights costs */
  rounding: number;
  /** CPU: max |Δ log p| of an f32 (unrounded) merge against base + adapter: ~0 when the formula is right */
  f32Gap: number;
  /** GPU: max |Δ log p| the adapter makes (base alone against base + adapter) */
  effect: number;
  /** what `gap` must stay under: 2·rounding + 1e-3 */
  tol: number;
}

export const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

function logp(logits: Float32Array, V: number, row: number, id: number): number {
  const r = logits.subarray(row * V, (row + 1) * V);
  let mx = -Infinity;
  for (const x of r) mx = Math.max(mx, x);
  let s = 0;
  for (const x of r) s += Math.exp(x - mx);
  return r[id] - mx - Math.log(s);
}

function cpuLogps(ref: LoadedModel, weights: WeightMap, seq: SeqInput, a?: LoraAdapter): number[] {
  const V = ref.config.text.vocabSize, ids = seq.inputIds;
  const out = new CpuModel(ref.config, weights, a).forward({ inputIds: ids, pixelValues: seq.images?.pixelValues, imageGridThw: seq.images?.imageGridThw });
  return Array.from({ length: ids.length - seq.scoreStart }, (_, i) => logp(out.logits, V, seq.scoreStart + i - 1, ids[seq.scoreStart + i]));
}

/** Score `seq` four ways on the CPU and two on the GPU (a WebGPU device must be up: gpu/node.ts nodeGpu in Node). */
export async function mergedParity(base: ModelSource, merged: ModelSource, adapter: LoraAdapter, seq: SeqInput): Promise<MergedParity> {
  if (!(seq.scoreStart >= 1 && seq.scoreStart < seq.inputIds.length)) throw new Error(`mergedParity: scoreStart ${seq.scoreStart} must be in [1, ${seq.inputIds.length})`);
  const ref = await loadModel(base);
  const mergedModel = await loadModel(merged);
  const unmerged = cpuLogps(ref, ref.weights, seq, adapter);
  const f32: WeightMap = { ...ref.weights };
  for (const [name, m] of adapter.modules) {
    const w = bf16ToF32(ref.weights[`${name}.weight`].data as Uint16Array);
    mergeLinear(w, m);
    f32[`${name}.weight`] = { dtype: 'f32', shape: ref.weights[`${name}.weight`].shape, data: w };
  }
  const f32Gap = maxAbs(cpuLogps(ref, f32, seq), unmerged);
  const rounding = maxAbs(cpuLogps(ref, mergedModel.weights, seq), unmerged);

  const mm = await Qwen2_5_VL.load(merged);
  const bm = await Qwen2_5_VL.load(base);
  try {
    bm.setAdapter(adapter);
    const lpMerged = (await mm.logps(seq, { lora: false, train: false })).logps;
    const lpAdapter = (await bm.logps(seq, { lora: true, train: false })).logps;
    // only its size matters (≫ tol), so the GPU's f32 does; a CPU forward costs seconds
    const lpBase = (await bm.logps(seq, { lora: false, train: false })).logps;
    return { gap: maxAbs(lpMerged, lpAdapter), rounding, f32Gap, effect: maxAbs(lpBase, lpAdapter), tol: 2 * rounding + 1e-3 };
  } finally {
    mm.dispose();
    bm.dispose();
  }
}

export const describeParity = (p: MergedParity) =>
  `merged vs base+adapter: GPU max |Δlogp| ${p.gap.toExponential(2)}, CPU BF16-rounding effect ${p.rounding.toExponential(2)}, f32-merge gap ${p.f32Gap.toExponential(2)}, adapter effect ${p.effect.toExponential(2)}, tolerance ${p.tol.toExponential(2)}`;
