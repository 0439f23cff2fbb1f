// The vision tower on the GPU (frozen: forward only).
//
//   pixel_values [N, 3·2·14·14] ─ patch embed (Conv3d = matmul) ─▶ [N, C]
//   reorder into window order (4-row merge groups gathered by window_index); 2-D rotary tables too
//   blocks: x += proj(attn(rope(q), rope(k), v)) inside windows (cu_window_seqlens), or the whole
//           image at fullatt_block_indexes (cu_seqlens); x += down(silu(gate(h)) · up(h))
//   merger: RMSNorm, 4 rows → one, mlp.0 → GELU → mlp.2 ─▶ [M, H] windowed
//   un-permute: image_embeds[window_index[i]] = merged[i]
import { fromData, readMany, type Tensor } from '../gpu/tensor.ts';
import { add, gatherRows, scatterRows } from '../ops/elementwise.ts';
import { attentionVarlen } from '../ops/attention.ts';
import { gelu } from '../ops/gelu.ts';
import { matmul } from '../ops/matmul.ts';
import { patchEmbed } from '../ops/patchEmbed.ts';
import { rmsnorm } from '../ops/rmsnorm.ts';
import { ropeApply, visionRopeTables } from '../ops/rope.ts';
import { visionRopeFreqs } from '../ops/cpu/rope.ts';
import { swiglu } from '../ops/swiglu.ts';
import { empty } from '../gpu/tensor.ts';
import { getWindowIndex } from '../data/windowIndex.ts';
import type { QwenVLConfig } from './config.ts';
import type { GpuWeights } from './gpuWeights.ts';

/** The golden intermediates (vision_forward), read back when asked. */
export interface VisionCapture {
  patchEmbeds: Float32Array;
  ropeFreqs: Float32Array;
  windowIndex: Int32Array;
  cuWindowSeqlens: Int32Array;
  cuSeqlens: Int32Array;
  blockOut: Float32Array[];
  mergerOutWindowed: Float32Array;
}

const VISION_EPS = 1e-6;

/**
 * image_embeds [M, H] (merged-token order, as the decoder consumes them) for the images of
 * pixelValues [N, K] / imageGridThw [n, 3]. With `capture`, also the intermediates (slow: readbacks).
 */
export async function visionForward(
  w: GpuWeights, cfg: QwenVLConfig, pixelValues: Float32Array, imageGridThw: ArrayLike<number>, opts: { capture?: boolean } = {},
): Promise<{ imageEmbeds: Tensor; capture?: VisionCapture }> {
  const v = cfg.vision;
  const C = v.hiddenSize, hd = v.headDim, heads = v.numHeads, unit = v.spatialMergeSize ** 2;
  const K = v.inChannels * v.temporalPatchSize * v.patchSize * v.patchSize;
  const wi = getWindowIndex(imageGridThw, { windowSize: v.windowSize, spatialMergeSize: v.spatialMergeSize, patchSize: v.patchSize });
  const N = wi.numPatches, M = wi.numMergedTokens;
  if (pixelValues.length !== N * K) throw new Error(`vision: pixel_values has ${pixelValues.length} values, image_grid_thw implies [${N}, ${K}]`);
  const cap: Partial<VisionCapture> & { blockOut: Float32Array[] } = { blockOut: [] };
  const grab = async (t: Tensor) => (await readMany([t]))[0] as Float32Array;

  // 1. patch embed
  const pv = fromData(pixelValues, [N, K], 'f32', 'pixel_values');
  const pe = patchEmbed(pv, w.get('visual.patch_embed.proj.weight'));
  pv.release();
  if (opts.capture) {
    cap.patchEmbeds = await grab(pe);
    cap.ropeFreqs = visionRopeFreqs(wi.patchPos, hd, 10000);
    Object.assign(cap, { windowIndex: wi.windowIndex, cuWindowSeqlens: wi.cuWindowSeqlens, cuSeqlens: wi.cuSeqlens });
  }

  // 2-4. window order: hidden states as [M, unit·C] rows gathered by window_index; rotary
  // positions permuted the same way on the CPU, so the tables are built in window order
  const widx = fromData(wi.windowIndex, [M], 'i32', 'window_index');
  let x = gatherRows(pe.view([M, unit * C]), widx).view([N, C]);
  pe.release();
  const pos = new Int32Array(N * 2);
  for (let i = 0; i < M; i++) pos.set(wi.patchPos.subarray(wi.windowIndex[i] * unit * 2, (wi.windowIndex[i] + 1) * unit * 2), i * unit * 2);
  const rope = visionRopeTables(pos, hd, 10000);
  const cuWin = fromData(wi.cuWindowSeqlens, [wi.cuWindowSeqlens.length], 'i32', 'cu_window_seqlens');
  const cuFull = fromData(wi.cuSeqlens, [wi.cuSeqlens.length], 'i32', 'cu_seqlens');

  // 5. blocks
  for (let b = 0; b < v.depth; b++) {
    const p = `visual.blocks.${b}.`;
    const lin = (name: string, t: Tensor) => matmul(t, w.get(p + name + '.weight'), { bias: w.get(p + name + '.bias'), name: p + name });
    const n1 = rmsnorm(x, w.get(p + 'norm1.weight'), VISION_EPS);
    const q0 = lin('attn.q', n1.y), k0 = lin('attn.k', n1.y), v0 = lin('attn.v', n1.y);
    n1.y.release();
    n1.rstd.release();
    const q = ropeApply(q0.view([N, heads, hd]), rope), k = ropeApply(k0.view([N, heads, hd]), rope);
    q0.release();
    k0.release();
    const a = attentionVarlen(q, k, v0.view([N, heads, hd]), v.fullattBlockIndexes.includes(b) ? cuFull : cuWin);
    for (const t of [q, k, v0, a.lse]) t.release();
    const o = lin('attn.proj', a.out.view([N, C]));
    a.out.release();
    const x2 = add(x, o);
    o.release();
    x.release();
    const n2 = rmsnorm(x2, w.get(p + 'norm2.weight'), VISION_EPS);
    const g = lin('mlp.gate_proj', n2.y), u = lin('mlp.up_proj', n2.y);
    n2.y.release();
    n2.rstd.release();
    const act = swiglu(g, u);
    g.release();
    u.release();
    const d = lin('mlp.down_proj', act);
    act.release();
    x = add(x2, d);
    x2.release();
    d.release();
    if (opts.capture) cap.blockOut.push(await grab(x));
  }
  for (const t of [rope.cos, rope.sin, cuWin, cuFull]) t.release();

  // 6. merger
  const nq = rmsnorm(x, w.get('visual.merger.ln_q.weight'), VISION_EPS);
  x.release();
  nq.rstd.release();
  const z = matmul(nq.y.view([M, unit * C]), w.get('visual.merger.mlp.0.weight'), { bias: w.get('visual.merger.mlp.0.bias'), name: 'merger.mlp.0' });
  nq.y.release();
  const zg = gelu(z);
  z.release();
  const merged = matmul(zg, w.get('visual.merger.mlp.2.weight'), { bias: w.get('visual.merger.mlp.2.bias'), name: 'merger.mlp.2' });
  zg.release();
  if (opts.capture) cap.mergerOutWindowed = await grab(merged);

  // 7. un-permute
  const imageEmbeds = empty([M, v.outHiddenSize], 'f32', 'image_embeds');
  scatterRows(merged, widx, imageEmbeds);
  merged.release();
  widx.release();
  return { imageEmbeds, capture: opts.capture ? (cap as VisionCapture) : undefined };
}
