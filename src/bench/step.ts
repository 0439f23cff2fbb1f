// One LoRA SFT step (zero grads, train forward, backward, AdamW, the one readback a trainer does)
// of a Qwen2.5-VL model, timed and split by op kind, with its "overhead ratio":
//   step time ÷ (the step's FLOPs at our matmul rate measured in the same run)
// where the rate comes from replaying every distinct matmul of the step on its own (same shapes,
// dtypes and layouts, each timed back to back), so 1.0 means the step runs as fast as its
// matmuls alone would. The default model is a 3B-width slice: Qwen2.5-VL-3B's real widths (text
// 2048 / 11008, 16 q / 2 kv heads × 128, vision 1280 / 3420, 16 heads × 80, vocab 151936, tied)
// with 2 decoder layers and 4 vision blocks (block 3 full attention, 0–2 windowed), random BF16
// weights produced on the fly by a virtual safetensors file (no 1 GB copy in memory).
//
// The input is deterministic and reproducible outside JavaScript (scripts/device/torch_step.py
// builds the same ids, pixels and labels): one image of grid (1, gh, gw) patches, `text` text
// tokens, the last `scored` tokens scored.
import { flush, OP_KINDS, startProfile, stopProfile, type OpKind, type Profile } from '../gpu/kernel.ts';
import { gpu } from '../gpu/device.ts';
import { empty, memory, read } from '../gpu/tensor.ts';
import { gemm, gemmFlops, recordGemms, takeGemms, type GemmCall } from '../ops/matmul.ts';
import { QWEN2_5_VL_3B_CONFIG_JSON, parseConfig, type QwenVLConfig } from '../model/config.ts';
import { expectedWeights } from '../model/weights.ts';
import { Qwen2_5_VL, type SeqInput } from '../model/qwen2_5_vl.ts';
import { targetRegex } from '../model/lora.ts';
import type { ModelSource } from '../model/sources/source.ts';
import { MissingFileError } from '../model/sources/source.ts';
import { AdamW } from '../train/optimizer.ts';
import { parseGradState } from '../ops/adamw.ts';
import type { BenchRow } from './report.ts';

// ---- the 3B-width slice -------------------------------------------------------------------------

/** Qwen2.5-VL-3B's config.json with `layers` decoder layers and `blocks` vision blocks (the last one full attention). */
export function sliceConfigJson(layers = 2, blocks = 4): Record<string, unknown> {
  const j = structuredClone(QWEN2_5_VL_3B_CONFIG_JSON) as unknown as Record<string, unknown> & { vision_config: Record<string, unknown> };
  j.num_hidden_layers = layers;
  j.max_window_layers = layers;
  j.vision_config.depth = blocks;
  j.vision_config.fullatt_block_indexes = [blocks - 1];
  return j;
}

/** Bits of a BF16 value in [-b, b] for element i of a tensor (a cheap integer hash, not a statistical RNG). */
function hashBf16(i: number, seed: number, b: number, center: number): number {
  let h = Math.imul(i ^ seed, 0x9e3779b1);
  h ^= h >>> 15;
  h = Math.imul(h, 0x85ebca77);
  h ^= h >>> 13;
  const u = (h >>> 0) / 4294967296; // [0, 1)
  f32[0] = center + (2 * u - 1) * b;
  return u32[0] >>> 16;
}
const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);

/**
 * A model folder whose `model.safetensors` is computed on read: the header lists every tensor the
 * config implies (BF16), and any byte range is generated from (tensor, element index). Linear
 * weights are U(±1/√fan_in) as torch initialises them, norms 1 ± 0.1, embeddings U(±0.035) (std 0.02).
 */
export function syntheticSource(configJson: Record<string, unknown>, seed = 1, id = 'synthetic 3B-width slice'): ModelSource {
  const cfg = parseConfig(configJson, `${id}: config.json`);
  const shapes = [...expectedWeights(cfg)].sort(([a], [b]) => (a < b ? -1 : 1));
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  const tensors: { name: string; begin: number; end: number; b: number; center: number; seed: number }[] = [];
  let off = 0;
  shapes.forEach(([name, shape], ti) => {
    const n = shape.reduce((a, x) => a * x, 1);
    header[name] = { dtype: 'BF16', shape, data_offsets: [off, off + 2 * n] };
    const isNorm = shape.length === 1 && /norm|ln_q/.test(name);
    const w = shapes.find(([nm]) => nm === name.replace(/\.bias$/, '.weight'))?.[1] ?? shape;
    const fanIn = w.length > 1 ? w.slice(1).reduce((a, x) => a * x, 1) : 1;
    const b = /embed_tokens|lm_head/.test(name) ? 0.035 : isNorm ? 0.1 : 1 / Math.sqrt(fanIn);
    tensors.push({ name, begin: off, end: off + 2 * n, b, center: isNorm ? 1 : 0, seed: Math.imul(seed, 1000003) + ti * 7919 });
    off += 2 * n;
  });
  let hjson = JSON.stringify(header);
  hjson += ' '.repeat((8 - ((8 + hjson.length) % 8)) % 8);
  const hbytes = new TextEncoder().encode(hjson);
  const dataStart = 8 + hbytes.length, size = dataStart + off;
  const head = new Uint8Array(dataStart);
  new DataView(head.buffer).setBigUint64(0, BigInt(hbytes.length), true);
  head.set(hbytes, 8);
  const files: Record<string, Uint8Array> = { 'config.json': new TextEncoder().encode(JSON.stringify(configJson)) };
  const range = (begin: number, end: number): Uint8Array => {
    const out = new Uint8Array(end - begin);
    if (begin < dataStart) out.set(head.subarray(begin, Math.min(end, dataStart)));
    // data bytes [max(begin, dataStart), end): whole BF16 elements (readers ask for tensor ranges)
    for (const t of tensors) {
      const a = Math.max(begin, dataStart + t.begin), z = Math.min(end, dataStart + t.end);
      if (a >= z) continue;
      const e0 = (a - dataStart - t.begin) >> 1, e1 = (z - dataStart - t.begin + 1) >> 1;
      for (let e = e0; e < e1; e++) {
        const bits = hashBf16(e, t.seed, t.b, t.center);
        const p = dataStart + t.begin + 2 * e - begin;
        if (p >= 0 && p < out.length) out[p] = bits & 0xff;
        if (p + 1 >= 0 && p + 1 < out.length) out[p + 1] = bits >>> 8;
      }
    }
    return out;
  };
  const file = (f: string) => {
    if (f !== 'model.safetensors' && !(f in files)) throw new MissingFileError(id, f);
  };
  return {
    id,
    list: async () => ['config.json', 'model.safetensors'],
    size: async (f) => (file(f), f === 'model.safetensors' ? size : files[f].byteLength),
    read: async (f) => (file(f), f === 'model.safetensors' ? range(0, size) : files[f]),
    readRange: async (f, b, e) => (file(f), f === 'model.safetensors' ? range(b, e) : files[f].subarray(b, e)),
  };
}

// ---- the input ------------------------------------------------------------------------------

export interface StepInputSpec { gridH: number; gridW: number; text: number; scored: number }
export const SLICE_INPUT: StepInputSpec = { gridH: 8, gridW: 8, text: 64, scored: 20 };

/**
 * ids: 4 text tokens, <|vision_start|>, the image pads, <|vision_end|>, then text up to `text`
 * text tokens; token t = 100 + (t·7919 mod 5000). Pixels: value i = 2·frac(i·0.6180339887) − 1.
 * scripts/device/torch_step.py builds exactly this.
 */
export function stepInput(cfg: QwenVLConfig, spec: StepInputSpec = SLICE_INPUT): SeqInput {
  const merge = cfg.vision.spatialMergeSize ** 2;
  const M = (spec.gridH * spec.gridW) / merge;
  const L = spec.text + M + 2;
  const ids = new Int32Array(L);
  for (let t = 0; t < L; t++) ids[t] = 100 + ((t * 7919) % 5000);
  ids[4] = cfg.visionStartTokenId;
  ids.fill(cfg.imageTokenId, 5, 5 + M);
  ids[5 + M] = cfg.visionEndTokenId;
  const K = 3 * cfg.vision.temporalPatchSize * cfg.vision.patchSize ** 2;
  const px = new Float32Array(spec.gridH * spec.gridW * K);
  for (let i = 0; i < px.length; i++) { const x = i * 0.6180339887; px[i] = 2 * (x - Math.floor(x)) - 1; }
  return { inputIds: ids, images: { pixelValues: px, imageGridThw: Int32Array.from([1, spec.gridH, spec.gridW]) }, scoreStart: L - spec.scored };
}

// ---- FLOPs ------------------------------------------------------------------------------------

/** Attention FLOPs of the step (QKᵀ and PV; the backward recomputes P and does 4 products, causal halves). */
export function attentionFlops(cfg: QwenVLConfig, seq: SeqInput): number {
  const L = seq.inputIds.length, t = cfg.text;
  const text = 2 * 2 * t.numAttentionHeads * t.headDim * (L * (L + 1)) / 2; // fwd: QKᵀ + PV over the causal half
  const textAll = t.numHiddenLayers * text * (1 + 2.5); // bwd: recompute QKᵀ + dV + dP + dQ + dK = 2.5× fwd
  const g = seq.images?.imageGridThw ?? new Int32Array(3);
  const N = g[1] * g[2], v = cfg.vision, Dv = v.hiddenSize / v.numHeads;
  const win = (v.windowSize / v.patchSize) ** 2; // patches per full window
  let vis = 0;
  for (let b = 0; b < v.depth; b++) {
    const span = v.fullattBlockIndexes.includes(b) ? N : Math.min(N, win);
    vis += 2 * 2 * v.numHeads * Dv * N * span; // forward only: the tower gets no gradient without vision LoRA
  }
  return textAll + vis;
}

// ---- the step ---------------------------------------------------------------------------------

export interface StepResult {
  model: string;
  tokens: number;
  imageTokens: number;
  scored: number;
  /** median wall ms of the unprofiled steps (the profiled step's when steps = 0) */
  stepMs: number;
  /** loss of the first step (before any update): the same folder and input give the same value in PyTorch */
  firstLoss: number;
  steps: number;
  /** one extra, profiled step */
  profile: Profile;
  profiledStepMs: number;
  matmulFlops: number;
  attentionFlops: number;
  /** matmul GFLOP/s from replaying the step's distinct matmuls alone */
  matmulGflops: number;
  /** the replay's time for the step's matmuls (ms) */
  matmulReplayMs: number;
  overheadRatio: number;
  dispatches: number;
  gpuBytesPeak: number;
  loss: number;
}

type Log = (line: string) => void;

async function idle(): Promise<void> {
  flush();
  await gpu().device.queue.onSubmittedWorkDone();
}

/** Time each distinct gemm of the step alone (every call of a shape back to back) → total ms. */
async function replayGemms(calls: GemmCall[]): Promise<number> {
  let total = 0;
  for (const c of calls) {
    const [ra, ca] = c.transA ? [c.K, c.M] : [c.M, c.K];
    const [rb, cb] = c.transB ? [c.N, c.K] : [c.K, c.N];
    const shapeA = c.batch > 1 ? [c.batch, ra, ca] : [ra, ca];
    const a = empty(shapeA, 'f32', 'replay.a');
    const b = empty([rb, cb], c.bf16 ? 'bf16' : 'f32', 'replay.b');
    const bias = c.bias ? empty([c.N], 'f32', 'replay.bias') : undefined;
    const out = empty(c.batch > 1 ? [c.batch, c.M, c.N] : [c.M, c.N], 'f32', 'replay.out');
    const call = () => gemm(a, b, { transA: c.transA, transB: c.transB, accumulate: c.accumulate, bias, out });
    call(); // compile / warm
    await idle();
    const reps = Math.max(1, c.count);
    let best = Infinity;
    for (let r = 0; r < 2; r++) {
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) call();
      await idle();
      best = Math.min(best, (performance.now() - t0) / reps);
    }
    total += best * c.count;
    for (const t of [a, b, bias, out]) t?.release();
  }
  return total;
}

/**
 * Load `source` with LoRA (r 16, alpha 32, every text projection) and time `steps` SFT steps
 * after one warm-up, then one profiled step, then the matmul replay.
 */
export async function benchSftStep(o: { source: ModelSource; spec?: StepInputSpec; steps?: number; log?: Log; profileMode?: 'timestamp' | 'flush' }): Promise<StepResult> {
  const log = o.log ?? (() => {});
  const model = await Qwen2_5_VL.load(o.source, { lora: { r: 16, loraAlpha: 32, loraDropout: 0, targetModules: targetRegex(), useRslora: false }, loraSeed: 1 });
  try {
    const cfg = model.config;
    const seq = stepInput(cfg, o.spec ?? SLICE_INPUT);
    const L = seq.inputIds.length, S = L - seq.scoreStart;
    const dl = new Float32Array(S).fill(-1 / S); // d(mean NLL)/d logp
    const opt = new AdamW(model.loraParams(), { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 });
    let loss = NaN;
    const step = async () => {
      model.clearImageCache(); // every step sees a new image in real training: run the tower each time
      model.zeroGrads();
      const r = await model.logps(seq, { lora: true, train: true });
      model.backward(dl);
      const state = opt.step(1e-4);
      const s = parseGradState(await read(state)); // the trainer reads the grad-norm state once per step
      state.release();
      opt.commit(s);
      loss = -r.logps.reduce((a, x) => a + x, 0) / S;
    };
    let t0 = performance.now();
    await step();
    const firstLoss = loss;
    log(`  warm-up step (pipeline compiles): ${(performance.now() - t0).toFixed(0)} ms; loss ${firstLoss.toFixed(4)}`);
    const times: number[] = [];
    const nSteps = o.steps ?? 1; // 0: only the profiled step (SwiftShader: a 3B-width step takes minutes)
    for (let i = 0; i < nSteps; i++) {
      t0 = performance.now();
      await step();
      times.push(performance.now() - t0);
    }
    let stepMs = times.slice().sort((a, b) => a - b)[Math.floor(times.length / 2)];
    // one profiled step (passes split by kind, so it may be a little slower), with the gemm log
    recordGemms();
    startProfile(o.profileMode);
    t0 = performance.now();
    await step();
    const profile = await stopProfile();
    const profiledStepMs = performance.now() - t0;
    const calls = takeGemms();
    if (!times.length) stepMs = profiledStepMs; // steps = 0: the one profiled step is the step time
    const matmulFlops = calls.reduce((a, c) => a + gemmFlops(c), 0);
    const attnFlops = attentionFlops(cfg, seq);
    const matmulReplayMs = await replayGemms(calls);
    const matmulGflops = matmulFlops / matmulReplayMs / 1e6;
    const ideal = (matmulFlops + attnFlops) / (matmulGflops * 1e6);
    const dispatches = OP_KINDS.reduce((a, k) => a + profile.dispatches[k], 0);
    const g = seq.images!.imageGridThw;
    return {
      model: o.source.id, tokens: L, imageTokens: (g[1] * g[2]) / cfg.vision.spatialMergeSize ** 2, scored: S,
      stepMs, firstLoss, steps: nSteps, profile, profiledStepMs, matmulFlops, attentionFlops: attnFlops, matmulGflops, matmulReplayMs,
      overheadRatio: stepMs / ideal, dispatches, gpuBytesPeak: memory.peak, loss,
    };
  } finally {
    model.dispose();
  }
}

/** The printed table and the JSON row of a step result. */
export function stepReport(name: string, r: StepResult, log: Log): BenchRow {
  const p = r.profile;
  const gpuMs = OP_KINDS.reduce((a, k) => a + p.ms[k], 0);
  log(`  ${name}: ${r.tokens} tokens (${r.imageTokens} image), ${r.scored} scored; loss ${r.loss.toFixed(3)}`);
  log(`  step ${r.stepMs.toFixed(0)} ms (${r.steps ? `median of ${r.steps}` : 'the profiled step'}); profiled step ${r.profiledStepMs.toFixed(0)} ms, split by ${p.mode} over ${p.segments} segments, ${r.dispatches} dispatches, ${p.submits} submits:`);
  for (const k of OP_KINDS) log(`    ${k.padEnd(10)} ${p.ms[k].toFixed(1).padStart(10)} ms  ${((100 * p.ms[k]) / r.profiledStepMs).toFixed(1).padStart(5)}%  ${String(p.dispatches[k]).padStart(5)} dispatches`);
  const gaps = r.profiledStepMs - gpuMs;
  log(`    ${'gaps'.padEnd(10)} ${gaps.toFixed(1).padStart(10)} ms  ${((100 * gaps) / r.profiledStepMs).toFixed(1).padStart(5)}%  (wall time outside every timed GPU segment: CPU work, submits, readbacks)`);
  log(`  FLOPs: matmul ${(r.matmulFlops / 1e9).toFixed(2)} G + attention ${(r.attentionFlops / 1e9).toFixed(2)} G; our matmul rate on the step's own products (replayed alone) ${r.matmulGflops.toFixed(2)} GFLOP/s (${r.matmulReplayMs.toFixed(0)} ms)`);
  log(`  overhead ratio = step ÷ (FLOPs at that rate) = ${r.overheadRatio.toFixed(3)}`);
  const extra: Record<string, number | string | null> = {
    tokens: r.tokens, image_tokens: r.imageTokens, scored: r.scored, loss: r.loss, first_loss: r.firstLoss, timed_steps: r.steps, profile_mode: p.mode, profiled_step_ms: r.profiledStepMs,
    gaps_ms: gaps, dispatches: r.dispatches, submits: p.submits, matmul_gflop: r.matmulFlops / 1e9, attention_gflop: r.attentionFlops / 1e9,
    matmul_gflops_rate: r.matmulGflops, matmul_replay_ms: r.matmulReplayMs, overhead_ratio: r.overheadRatio, gpu_bytes_peak: r.gpuBytesPeak,
  };
  for (const k of OP_KINDS) extra[`${k}_ms` as `${OpKind}_ms`] = p.ms[k];
  return { group: 'step', name, shape: `${r.tokens} tok (${r.imageTokens} img), ${r.scored} scored`, ours_ms: r.stepMs, peers: {}, extra };
}
