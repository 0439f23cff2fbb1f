// Reference Qwen2.5-VL forward in plain TypeScript: BF16 weights widened to f32, f64 sums.
// Slow and simple on purpose; it checks the GPU model (logits, and generation token for token).
//
// vision: patch embed → 2-D rotary → blocks (window attention, full attention at
//   fullatt_block_indexes; hidden states in window order) → merger → un-permute
// text: embed, image rows scattered into the image-pad positions → decoder layers (RMSNorm, GQA
//   with q/k/v bias and M-RoPE, SwiGLU; optional LoRA) → final norm → tied embedding or lm_head
// LoRA (text and vision modules) with optional dropout: the branch reads dropout(x) with the GPU's
// hash mask (ops/cpu/dropout.ts), so a train forward's result can be checked exactly.
import type { QwenVLConfig } from '../config.ts';
import type { LoraAdapter } from '../lora.ts';
import { lmHeadName, weightF32, type WeightMap } from '../weights.ts';
import { getWindowIndex, reverseIndex } from '../../data/windowIndex.ts';
import { getRopeIndex } from '../../data/ropeIndex.ts';
import { addInPlace, addLora, attention, geluInPlace, linear, rmsnorm, ropeInPlace, segmentKeys, swiglu } from './math.ts';
import { dropoutCpu, dropoutStream } from '../../ops/cpu/dropout.ts';

/** LoRA dropout of a train forward: probability and the forward's seed (as logps' dropoutSeed). */
export interface CpuDropout { p: number; seed: number }

export interface VisionOutput {
  /** [M, H] un-permuted (merged-token order), as the decoder consumes them */
  imageEmbeds: Float32Array;
  /** with `capture`: the golden intermediates */
  patchEmbeds?: Float32Array;
  ropeFreqs?: Float32Array;
  windowIndex?: Int32Array;
  cuWindowSeqlens?: Int32Array;
  cuSeqlens?: Int32Array;
  blockOut?: Float32Array[];
  mergerOutWindowed?: Float32Array;
}

export interface ForwardInput {
  inputIds: ArrayLike<number>;
  /** [N, C·tp·p·p] patchified pixels of all images, concatenated */
  pixelValues?: Float32Array;
  /** [n_img, 3] (t, gh, gw) */
  imageGridThw?: ArrayLike<number>;
  /** precomputed vision output (skips the vision tower; generation reuses it) */
  imageEmbeds?: Float32Array;
  /** apply the LoRA adapter the model holds (default true when it has one) */
  lora?: boolean;
  /** only these rows of the logits (default all); e.g. [L-1] while generating */
  logitRows?: number[];
  /** keep intermediates (inputs_embeds, per-layer outputs, vision internals) */
  capture?: boolean;
  /** LoRA dropout as a train forward applies it (default none) */
  dropout?: CpuDropout;
}

export interface ForwardOutput {
  /** [rows, V] for the requested rows */
  logits: Float32Array;
  /** [3, L] and rope delta (B = 1) */
  positionIds: Int32Array;
  ropeDelta: number;
  imageEmbeds?: Float32Array;
  vision?: VisionOutput;
  inputsEmbeds?: Float32Array;
  layerOut?: Float32Array[];
  lastHiddenState?: Float32Array;
}

export class CpuModel {
  private f32 = new Map<string, Float32Array>();

  constructor(readonly config: QwenVLConfig, readonly weights: WeightMap, readonly adapter?: LoraAdapter) {}

  /** a weight widened to f32 (cached) */
  w(name: string): Float32Array {
    let a = this.f32.get(name);
    if (!a) {
      const t = this.weights[name];
      if (!t) throw new Error(`CpuModel: weight "${name}" missing`);
      a = weightF32(t);
      this.f32.set(name, a);
    }
    return a;
  }

  private has(name: string): boolean {
    return name in this.weights;
  }

  /** nn.Linear `module` (canonical name) on x [T, in], with its LoRA branch (on dropout(x)) when enabled */
  private linear(module: string, x: Float32Array, T: number, inF: number, outF: number, lora: boolean, drop?: CpuDropout): Float32Array {
    const b = this.has(`${module}.bias`) ? this.w(`${module}.bias`) : undefined;
    const y = linear(x, T, inF, this.w(`${module}.weight`), outF, b);
    const m = lora ? this.adapter?.modules.get(module) : undefined;
    if (m) {
      const xd = drop && drop.p > 0 ? dropoutCpu(x, drop.p, drop.seed, dropoutStream(module)) : x;
      addLora(y, xd, T, inF, outF, m.A, m.B, m.r, m.scaling);
    }
    return y;
  }

  // ------------------------------------------------------------ vision

  vision(pixelValues: Float32Array, imageGridThw: ArrayLike<number>, opts: { capture?: boolean; lora?: boolean; dropout?: CpuDropout } = {}): VisionOutput {
    const v = this.config.vision;
    const C = v.hiddenSize, hd = v.headDim, unit = v.spatialMergeSize ** 2;
    const K = v.inChannels * v.temporalPatchSize * v.patchSize * v.patchSize;
    const wi = getWindowIndex(imageGridThw, { windowSize: v.windowSize, spatialMergeSize: v.spatialMergeSize, patchSize: v.patchSize });
    const N = wi.numPatches, M = wi.numMergedTokens;
    if (pixelValues.length !== N * K) throw new Error(`vision: pixel_values has ${pixelValues.length} values, image_grid_thw implies [${N}, ${K}]`);
    const lora = opts.lora ?? !!this.adapter, drop = opts.dropout;

    // 1. patch embed: the Conv3d with kernel = stride is a matmul with the flattened kernel
    const patchEmbeds = linear(pixelValues, N, K, this.w('visual.patch_embed.proj.weight'), C);

    // 2. rotary angles [N, hd/2]: row·inv[k] for k < hd/4, col·inv[k] after, inv[k] = 10000^(−2k/(hd/2))
    const half = hd / 2, quarter = hd / 4;
    const ang = new Float64Array(N * half);
    for (let k = 0; k < quarter; k++) {
      const inv = Math.pow(10000, (-2 * k) / half);
      for (let n = 0; n < N; n++) {
        ang[n * half + k] = wi.patchPos[2 * n] * inv;
        ang[n * half + quarter + k] = wi.patchPos[2 * n + 1] * inv;
      }
    }

    // 3-4. window order: gather groups of `unit` rows by window_index
    const x = new Float32Array(N * C);
    const angW = new Float64Array(N * half);
    for (let i = 0; i < M; i++) {
      const src = wi.windowIndex[i];
      x.set(patchEmbeds.subarray(src * unit * C, (src + 1) * unit * C), i * unit * C);
      angW.set(ang.subarray(src * unit * half, (src + 1) * unit * half), i * unit * half);
    }

    // 5. blocks
    const windowKeys = segmentKeys(wi.cuWindowSeqlens), fullKeys = segmentKeys(wi.cuSeqlens);
    const blockOut: Float32Array[] = [];
    for (let b = 0; b < v.depth; b++) {
      const p = `visual.blocks.${b}.`;
      const keys = v.fullattBlockIndexes.includes(b) ? fullKeys : windowKeys;
      const h = rmsnorm(x, this.w(p + 'norm1.weight'), C, 1e-6);
      const qkv = this.linear(p + 'attn.qkv', h, N, C, 3 * C, lora, drop);
      const q = new Float32Array(N * C), k = new Float32Array(N * C), vv = new Float32Array(N * C);
      for (let n = 0; n < N; n++) {
        q.set(qkv.subarray(n * 3 * C, n * 3 * C + C), n * C);
        k.set(qkv.subarray(n * 3 * C + C, n * 3 * C + 2 * C), n * C);
        vv.set(qkv.subarray(n * 3 * C + 2 * C, n * 3 * C + 3 * C), n * C);
      }
      ropeInPlace(q, angW, N, v.numHeads, hd);
      ropeInPlace(k, angW, N, v.numHeads, hd);
      const a = attention(q, k, vv, N, v.numHeads, v.numHeads, hd, keys);
      addInPlace(x, this.linear(p + 'attn.proj', a, N, C, C, lora, drop));
      const h2 = rmsnorm(x, this.w(p + 'norm2.weight'), C, 1e-6);
      const g = this.linear(p + 'mlp.gate_proj', h2, N, C, v.intermediateSize, lora, drop);
      const u = this.linear(p + 'mlp.up_proj', h2, N, C, v.intermediateSize, lora, drop);
      addInPlace(x, this.linear(p + 'mlp.down_proj', swiglu(g, u), N, v.intermediateSize, C, lora, drop));
      if (opts.capture) blockOut.push(x.slice());
    }

    // 6. merger: RMSNorm, `unit` consecutive rows as one, mlp.0 → GELU → mlp.2
    const Cm = C * unit;
    const z = this.linear('visual.merger.mlp.0', rmsnorm(x, this.w('visual.merger.ln_q.weight'), C, 1e-6), M, Cm, Cm, lora, drop);
    geluInPlace(z);
    const H = v.outHiddenSize;
    const merged = this.linear('visual.merger.mlp.2', z, M, Cm, H, lora, drop);

    // 7. un-permute
    const rev = reverseIndex(wi.windowIndex);
    const imageEmbeds = new Float32Array(M * H);
    for (let j = 0; j < M; j++) imageEmbeds.set(merged.subarray(rev[j] * H, (rev[j] + 1) * H), j * H);

    const out: VisionOutput = { imageEmbeds };
    if (opts.capture) {
      Object.assign(out, {
        patchEmbeds, ropeFreqs: Float32Array.from(ang), windowIndex: wi.windowIndex, cuWindowSeqlens: wi.cuWindowSeqlens,
        cuSeqlens: wi.cuSeqlens, blockOut, mergerOutWindowed: merged,
      });
    }
    return out;
  }

  // ------------------------------------------------------------ text

  forward(input: ForwardInput): ForwardOutput {
    const cfg = this.config, t = cfg.text;
    const H = t.hiddenSize, D = t.headDim, Hq = t.numAttentionHeads, Hkv = t.numKeyValueHeads, I = t.intermediateSize, V = t.vocabSize;
    const ids = Array.from(input.inputIds);
    const L = ids.length;
    if (!L) throw new Error('forward: empty input_ids');
    for (const id of ids) if (!(Number.isInteger(id) && id >= 0 && id < V)) throw new Error(`forward: token id ${id} is outside the vocabulary (${V})`);
    const lora = input.lora ?? !!this.adapter;

    // vision
    const nImageTokens = ids.filter((i) => i === cfg.imageTokenId).length;
    let vision: VisionOutput | undefined;
    let imageEmbeds = input.imageEmbeds;
    if (nImageTokens && !imageEmbeds) {
      if (!input.pixelValues || !input.imageGridThw) throw new Error(`forward: input_ids hold ${nImageTokens} image tokens but no pixel_values / image_grid_thw were given`);
      vision = this.vision(input.pixelValues, input.imageGridThw, { capture: input.capture, lora, dropout: input.dropout });
      imageEmbeds = vision.imageEmbeds;
    }
    if (nImageTokens && !input.imageGridThw) throw new Error(`forward: input_ids hold ${nImageTokens} image tokens but no image_grid_thw was given`);
    if ((imageEmbeds?.length ?? 0) !== nImageTokens * H) {
      throw new Error(`forward: input_ids hold ${nImageTokens} image tokens but the images give ${(imageEmbeds?.length ?? 0) / H} features`);
    }

    // embeddings, image rows scattered in order
    const E = this.w('model.embed_tokens.weight');
    const x = new Float32Array(L * H);
    for (let i = 0, m = 0; i < L; i++) {
      if (ids[i] === cfg.imageTokenId) x.set(imageEmbeds!.subarray(m * H, ++m * H), i * H);
      else x.set(E.subarray(ids[i] * H, (ids[i] + 1) * H), i * H);
    }
    const inputsEmbeds = input.capture ? x.slice() : undefined;

    // M-RoPE angles [L, D/2]: frequency j uses stream 0, 1 or 2 by mrope_section
    const ri = getRopeIndex(
      { inputIds: ids, imageGridThw: nImageTokens ? input.imageGridThw : undefined },
      { imageTokenId: cfg.imageTokenId, visionStartTokenId: cfg.visionStartTokenId, spatialMergeSize: cfg.vision.spatialMergeSize, videoTokenId: cfg.videoTokenId },
    );
    const half = D / 2, [s0, s1] = t.mropeSection;
    const ang = new Float64Array(L * half);
    for (let j = 0; j < half; j++) {
      const inv = Math.pow(t.ropeTheta, (-2 * j) / D);
      const s = j < s0 ? 0 : j < s0 + s1 ? 1 : 2;
      for (let l = 0; l < L; l++) ang[l * half + j] = ri.positionIds[s * L + l] * inv;
    }

    const causal = (i: number): [number, number] => [0, i + 1];
    const layerOut: Float32Array[] = [];
    for (let li = 0; li < t.numHiddenLayers; li++) {
      const p = `model.layers.${li}.`;
      const h = rmsnorm(x, this.w(p + 'input_layernorm.weight'), H, t.rmsNormEps);
      const q = this.linear(p + 'self_attn.q_proj', h, L, H, Hq * D, lora, input.dropout);
      const k = this.linear(p + 'self_attn.k_proj', h, L, H, Hkv * D, lora, input.dropout);
      const v = this.linear(p + 'self_attn.v_proj', h, L, H, Hkv * D, lora, input.dropout);
      ropeInPlace(q, ang, L, Hq, D);
      ropeInPlace(k, ang, L, Hkv, D);
      const a = attention(q, k, v, L, Hq, Hkv, D, causal);
      addInPlace(x, this.linear(p + 'self_attn.o_proj', a, L, Hq * D, H, lora, input.dropout));
      const h2 = rmsnorm(x, this.w(p + 'post_attention_layernorm.weight'), H, t.rmsNormEps);
      const g = this.linear(p + 'mlp.gate_proj', h2, L, H, I, lora, input.dropout);
      const u = this.linear(p + 'mlp.up_proj', h2, L, H, I, lora, input.dropout);
      addInPlace(x, this.linear(p + 'mlp.down_proj', swiglu(g, u), L, I, H, lora, input.dropout));
      if (input.capture) layerOut.push(x.slice());
    }
    const last = rmsnorm(x, this.w('model.norm.weight'), H, t.rmsNormEps);

    const rows = input.logitRows ?? [...Array(L).keys()];
    const sel = new Float32Array(rows.length * H);
    rows.forEach((r, i) => sel.set(last.subarray(r * H, (r + 1) * H), i * H));
    const logits = linear(sel, rows.length, H, this.w(lmHeadName(cfg)), V);

    return {
      logits, positionIds: ri.positionIds, ropeDelta: ri.ropeDeltas[0], imageEmbeds, vision,
      ...(input.capture ? { inputsEmbeds, layerOut, lastHiddenState: last } : {}),
    };
  }

  /**
   * Greedy decoding without a KV cache: every step reruns the decoder over the whole sequence
   * (the vision tower once). Ties go to the lowest id, as torch.argmax. Stops after a stop id
   * (included in the output) or maxNewTokens.
   */
  generate(input: Omit<ForwardInput, 'logitRows' | 'capture'> & { maxNewTokens: number; stopIds?: number[] }): number[] {
    const ids = Array.from(input.inputIds);
    const stop = new Set(input.stopIds ?? this.config.eosTokenIds);
    const out: number[] = [];
    let imageEmbeds = input.imageEmbeds;
    for (let s = 0; s < input.maxNewTokens; s++) {
      const r = this.forward({ ...input, inputIds: ids, imageEmbeds, logitRows: [ids.length - 1] });
      imageEmbeds ??= r.imageEmbeds;
      const next = argmax(r.logits);
      out.push(next);
      ids.push(next);
      if (stop.has(next)) break;
    }
    return out;
  }
}

export function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}
