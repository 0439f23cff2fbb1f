// Frozen weights on the GPU. Streamed from a ModelSource tensor by tensor (loadWeights' onTensor),
// uploaded as they arrive, so the CPU never holds the whole checkpoint.
//
// Formats: matrices and norm weights stay packed BF16 (two per u32, widened in the kernels); biases
// are widened to f32 (the GEMM adds an f32 bias). The vision qkv projection is split into q, k and v
// row blocks so each comes out contiguous as [N, heads, hd] (rotary and attention want that).
// The token embedding (and lm_head when untied) is uploaded as row shards of `vocabChunk` rows:
// one shard is one binding (the 3B table is 622 MB, above common binding limits) and one vocabulary
// chunk of the chunked lm_head + log-softmax.
//
// NF4 (quant.ts): with a QuantPlan, Linear weights are stored as Nf4Tensor (4-bit codes + absmax),
// either quantised here as each full-precision tensor streams in (then dropped), or read from a
// bitsandbytes 4-bit checkpoint. The vision qkv is quantised whole (as bitsandbytes does) and its
// q, k, v are row views of it.
import { gpu } from '../gpu/device.ts';
import { uploadNf4, type Nf4Data } from '../gpu/nf4.ts';
import { fromData, trimPool, type Tensor } from '../gpu/tensor.ts';
import type { QwenVLConfig } from './config.ts';
import { Bnb4bitReader, linearKind, nf4ToBf16Bits, quantizesOnLoad, quantizeWeight, type QuantPlan } from './quant.ts';
import { bf16ToF32 } from '../gpu/bf16.ts';
import { lmHeadName, loadWeights, type LoadWarning, type Weight } from './weights.ts';
import type { ModelSource } from './sources/source.ts';

export interface UploadProgress { bytes: number; total: number; tensor?: string }

export interface VocabShard {
  /** [rows, H] bf16 */
  t: Tensor;
  /** first vocabulary id of the shard */
  v0: number;
}

export class GpuWeights {
  private map = new Map<string, Tensor>();
  embed: VocabShard[] = [];
  /** the output projection: the embedding shards when tied */
  lmHead: VocabShard[] = [];
  /** what the loader accepted with a note (unused tensors, layout...) */
  loadWarnings: LoadWarning[] = [];
  constructor(readonly config: QwenVLConfig, readonly vocabChunk: number) {}

  get(name: string): Tensor {
    const t = this.map.get(name);
    if (!t) throw new Error(`GPU weights: "${name}" was not uploaded`);
    return t;
  }
  has(name: string): boolean {
    return this.map.has(name);
  }
  set(name: string, t: Tensor): void {
    this.map.get(name)?.release();
    this.map.set(name, t);
  }
  /** every tensor, each once */
  all(): Tensor[] {
    return [...new Set([...this.map.values(), ...this.embed.map((s) => s.t), ...this.lmHead.map((s) => s.t)])];
  }
  get bytes(): number {
    return this.all().reduce((a, t) => a + t.bindSize, 0);
  }
  release(): void {
    for (const t of this.all()) t.release();
    this.map.clear();
    this.embed = [];
    this.lmHead = [];
  }
}

/**
 * Rows per vocabulary shard: `want` (default 16384), at most what one binding holds of the table,
 * even (bf16 pairs never straddle shards when H is odd).
 */
export function vocabChunkRows(cfg: QwenVLConfig, want = 16384): number {
  const H = cfg.text.hiddenSize, V = cfg.text.vocabSize;
  const maxBind = Math.min(gpu().limits.maxStorageBufferBindingSize, gpu().limits.maxBufferSize);
  let rows = Math.min(V, want, Math.floor(maxBind / (2 * H)));
  if (rows < V && rows % 2) rows--;
  if (rows < 1) throw new Error(`hidden size ${H} is too large for this adapter's maxStorageBufferBindingSize ${maxBind}`);
  return rows;
}

function bits(w: Weight): Uint16Array {
  if (w.dtype !== 'bf16') throw new Error('GPU weights are uploaded from BF16 bits (loadWeights converts F16/F32)');
  return w.data as Uint16Array;
}

function shards(name: string, w: Weight, rows: number): VocabShard[] {
  const [V, H] = w.shape;
  const b = bits(w);
  const out: VocabShard[] = [];
  try {
    for (let v0 = 0; v0 < V; v0 += rows) {
      const n = Math.min(rows, V - v0);
      out.push({ t: fromData(b.subarray(v0 * H, (v0 + n) * H), [n, H], 'bf16', `${name}[${v0}:${v0 + n}]`), v0 });
    }
  } catch (e) {
    for (const s of out) s.t.release();
    throw e;
  }
  return out;
}

/** Upload one 4-bit weight (canonical name); the vision qkv as q, k, v row views. */
function putNf4(gw: GpuWeights, name: string, d: Nf4Data): void {
  const t = uploadNf4(d, name);
  const qkv = /^(visual\.blocks\.\d+\.attn\.)qkv\.weight$/.exec(name);
  if (!qkv) return gw.set(name, t);
  const C = gw.config.vision.hiddenSize;
  ['q', 'k', 'v'].forEach((part, i) => gw.set(`${qkv[1]}${part}.weight`, t.rows(i * C, C, `${qkv[1]}${part}.weight`)));
}

/** Upload one checkpoint tensor (canonical name) into `gw`, quantising it when the plan says so. */
function put(gw: GpuWeights, name: string, w: Weight, plan?: QuantPlan): void {
  const cfg = gw.config;
  if (plan && quantizesOnLoad(name, plan)) return putNf4(gw, name, quantizeWeight(bf16ToF32(bits(w)), w.shape, plan));
  if (name === 'model.embed_tokens.weight') {
    gw.embed = shards(name, w, gw.vocabChunk);
    if (cfg.text.tieWordEmbeddings) gw.lmHead = gw.embed;
    return;
  }
  if (name === 'lm_head.weight') {
    if (!cfg.text.tieWordEmbeddings) gw.lmHead = shards(name, w, gw.vocabChunk);
    return;
  }
  const qkv = /^(visual\.blocks\.\d+\.attn\.)qkv\.(weight|bias)$/.exec(name);
  if (qkv) {
    // rows [0, C) are q, [C, 2C) k, [2C, 3C) v
    const C = cfg.vision.hiddenSize, b = bits(w);
    ['q', 'k', 'v'].forEach((part, i) => {
      const n = `${qkv[1]}${part}.${qkv[2]}`;
      if (qkv[2] === 'bias') gw.set(n, fromData(bf16ToF32(b.subarray(i * C, (i + 1) * C)), [C], 'f32', n));
      else gw.set(n, fromData(b.subarray(i * C * C, (i + 1) * C * C), [C, C], 'bf16', n));
    });
    return;
  }
  if (name.endsWith('.bias')) gw.set(name, fromData(bf16ToF32(bits(w)), w.shape, 'f32', name));
  else gw.set(name, fromData(bits(w), w.shape, 'bf16', name));
}

/**
 * Stream every weight of `source` onto the GPU. On any failure (missing tensor, wrong shape,
 * truncated file, out of memory) everything uploaded so far is released and the pool trimmed
 * before the error propagates: nothing half-loaded stays on the GPU.
 */
export async function uploadWeights(
  source: ModelSource, cfg: QwenVLConfig,
  opts: { onProgress?: (p: UploadProgress) => void; vocabChunk?: number; signal?: AbortSignal; quant?: QuantPlan } = {},
): Promise<GpuWeights> {
  const gw = new GpuWeights(cfg, vocabChunkRows(cfg, opts.vocabChunk));
  let current: string | undefined;
  const plan = opts.quant;
  // a bitsandbytes 4-bit checkpoint: its quantised weights arrive raw; a vision tower the plan
  // keeps BF16 is dequantised (exactly the values bitsandbytes computes with)
  const bnb = plan?.prequantized
    ? new Bnb4bitReader(cfg, source.id, (name, d) => {
      current = name;
      if (linearKind(name.slice(0, -'.weight'.length)) === 'vision' && !plan.quantizeVision) put(gw, name, { dtype: 'bf16', shape: d.shape, data: nf4ToBf16Bits(d) });
      else putNf4(gw, name, d);
    })
    : undefined;
  try {
    const loaded = await loadWeights(source, cfg, {
      keep: false,
      signal: opts.signal,
      raw: bnb ? { claim: bnb.claim, onRaw: bnb.onRaw } : undefined,
      onTensor: (name, w) => {
        current = name;
        put(gw, name, w, plan);
      },
      onProgress: (p) => {
        if (p.phase === 'tensors' || p.phase === 'done') opts.onProgress?.({ bytes: p.loadedBytes, total: p.totalBytes, tensor: current });
      },
    });
    gw.loadWarnings = loaded.loadWarnings;
    bnb?.finish();
    if (!gw.embed.length || !gw.lmHead.length) throw new Error(`${source.id}: no ${gw.embed.length ? lmHeadName(cfg) : 'model.embed_tokens.weight'} was uploaded`);
    // surface allocation / validation errors now, while we can still clean up
    await gpu().device.queue.onSubmittedWorkDone();
  } catch (e) {
    gw.release();
    trimPool();
    throw e;
  }
  return gw;
}
