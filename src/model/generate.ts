// Generation with a KV cache, for a batch of prompts (an RL group is G copies of one prompt).
//
//   prefill (once per distinct prompt): the decoder over the whole prompt, each layer writing its
//     rotated k and v into the sequence's cache [capacity, Hkv, D]; duplicates copy the cache
//   decode: one row per unfinished sequence through the same layer code (matmuls batched over the
//     rows); attention per sequence over its cache (q_offset = cache length); M-RoPE position of
//     the new token = cache position + rope delta on all three streams
//   next token: greedy on the GPU (text.ts argmaxIds), or temperature → top-k → top-p drawn with
//     one uniform per row from the seeded CPU RNG (the CPU sampler's stream) either on the GPU
//     (ops/sample.ts; logits stay there, only ids and their log-probs come back) or on the CPU
//     (ops/cpu/sample.ts); defaultSampler() picks by adapter. Rows the GPU kernel hands back
//     (top-k > SAMPLE_KMAX, a top-p nucleus wider than that) use the CPU sampler, same uniform.
//   repetition penalty (transformers' RepetitionPenaltyLogitsProcessor, before the warpers): the
//     logits of every id in the prompt or generated so far divided by it when > 0, multiplied when
//     < 0; those steps read the logits back and choose on the CPU (the GPU sampler has no penalty)
//   a stop id ends its sequence (and is returned)
//   onToken (optional) sees each step's chosen tokens as they come (streaming) and may end them all
import { encoder } from '../gpu/kernel.ts';
import { gpu } from '../gpu/device.ts';
import { empty, fromData, readI32, readMany, type Tensor } from '../gpu/tensor.ts';
import { argmax, logprobAt, sampleTokenU } from '../ops/cpu/sample.ts';
import { SAMPLE_KMAX, sampleRows } from '../ops/sample.ts';
import { attentionCausal } from '../ops/attention.ts';
import { embedding } from '../ops/embedding.ts';
import { gatherRows } from '../ops/elementwise.ts';
import { rmsnorm } from '../ops/rmsnorm.ts';
import { mropeTables, type RopeTables } from '../ops/rope.ts';
import type { QwenVLConfig } from './config.ts';
import { Rng } from '../base/rng.ts';
import { argmaxIds, layerForward, logitsChunk, type Attend, type TextCtx } from './text.ts';
import type { ImageInput } from './imageCache.ts';

export interface Prompt { inputIds: Int32Array; images?: ImageInput }

export interface GenerateOptions {
  maxNewTokens: number;
  /** 0 or absent: greedy */
  temperature?: number;
  /** keep the k most likely tokens (0 or absent: all) */
  topK?: number;
  /** nucleus: keep the smallest set with probability ≥ topP (1 or absent: all) */
  topP?: number;
  /** transformers' repetition_penalty (> 0; 1 or absent: off), greedy or sampled */
  repetitionPenalty?: number;
  /** generation stops after any of these (the stop id is part of the output) */
  stopIds: number[];
  seed?: number;
  /** apply the LoRA adapter (default: when the model has one) */
  lora?: boolean;
  /** where sampled tokens are drawn: 'gpu' (logits never leave the GPU) or 'cpu' (the earlier path); default defaultSampler() */
  sampler?: 'gpu' | 'cpu';
  /**
   * Called after every step with the tokens it chose, one per sequence still generating (its prompt
   * index, the id, its log-prob as in Generated), in the order they join the outputs; the stop id
   * of a sequence comes too. Return true to end every sequence there (what was generated so far is
   * returned). It draws no random number and sees only chosen tokens, so the outputs are unchanged.
   */
  onToken?: (tokens: { prompt: number; id: number; logprob: number }[]) => boolean | void | Promise<boolean | void>;
}

/** New tokens per prompt and, for sampled generation, log p of each under log_softmax(logits / temperature). */
export interface Generated {
  ids: Int32Array[];
  /** per prompt, one per new token; NaN for greedy generation */
  logprobs: Float32Array[];
}

/** What generation needs from the model. */
export interface GenHost {
  config: QwenVLConfig;
  contextLength: number;
  ctx(lora: boolean): TextCtx;
  prepare(p: Prompt): Promise<{ x: Tensor; rope: RopeTables; ropeDelta: number; L: number }>;
}

interface Seq {
  prompt: number;
  /** tokens in the cache */
  len: number;
  cap: number;
  ropeDelta: number;
  k: Tensor[];
  v: Tensor[];
  out: number[];
  /** log-prob of each new token (NaN when greedy) */
  lp: number[];
  done: boolean;
  /** the prompt's ids and the ones generated (for the repetition penalty) */
  seen: Set<number>;
}

export { argmax };

let samplerDefault: 'gpu' | 'cpu' | undefined;
/** Where sampled tokens are drawn when GenerateOptions.sampler is not given (undefined: defaultSampler()). */
export function setDefaultSampler(s: 'gpu' | 'cpu' | undefined): void {
  samplerDefault = s;
}

/**
 * setDefaultSampler(), else PATCHWORK_SAMPLER=gpu|cpu, else by adapter: on a CPU adapter
 * (SwiftShader, llvmpipe, WARP) the "readback" is a memcpy and its kernels run no faster than the
 * JS sampler (same run: about equal for plain temperature, slower for top-k), so 'cpu'; real GPUs 'gpu'.
 */
export function defaultSampler(): 'gpu' | 'cpu' {
  if (samplerDefault) return samplerDefault;
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.PATCHWORK_SAMPLER;
  if (env === 'gpu' || env === 'cpu') return env;
  return /swiftshader|llvmpipe|lavapipe|warp|cpu/i.test(gpu().adapterName) ? 'cpu' : 'gpu';
}

/**
 * One token from a row of logits: logits/temperature → top-k → top-p → draw (transformers' warper
 * order; ops/cpu/sample.ts). Greedy (temperature 0) uses no random number; every draw uses one.
 */
export function sampleToken(logits: ArrayLike<number>, o: { temperature?: number; topK?: number; topP?: number }, rng: Rng): number {
  if (!((o.temperature ?? 0) > 0)) return argmax(logits);
  return sampleTokenU(logits, o, rng.next());
}

/**
 * transformers' RepetitionPenaltyLogitsProcessor on one row, in place: the logit of every id seen
 * (prompt and generated, each once) divided by `penalty` when positive, multiplied when negative.
 */
export function applyRepetitionPenalty(logits: Float32Array, seen: Iterable<number>, penalty: number): void {
  for (const id of seen) logits[id] = logits[id] < 0 ? logits[id] * penalty : logits[id] / penalty;
}

function checkOptions(o: GenerateOptions): void {
  if (!(Number.isInteger(o.maxNewTokens) && o.maxNewTokens >= 0)) throw new Error(`generate: maxNewTokens must be a non-negative integer, got ${o.maxNewTokens}`);
  if (o.temperature !== undefined && !(o.temperature >= 0)) throw new Error(`generate: temperature must be >= 0, got ${o.temperature}`);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0)) throw new Error(`generate: topK must be a non-negative integer, got ${o.topK}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw new Error(`generate: topP must be in (0, 1], got ${o.topP}`);
  if (o.repetitionPenalty !== undefined && !(o.repetitionPenalty > 0 && Number.isFinite(o.repetitionPenalty))) throw new Error(`generate: repetitionPenalty must be > 0, got ${o.repetitionPenalty}`);
  if (!Array.isArray(o.stopIds)) throw new Error('generate: stopIds must be a list of token ids');
  if (o.sampler !== undefined && o.sampler !== 'gpu' && o.sampler !== 'cpu') throw new Error(`generate: sampler must be 'gpu' or 'cpu', got ${o.sampler}`);
  if (o.onToken !== undefined && typeof o.onToken !== 'function') throw new Error('generate: onToken must be a function');
}

const copyRows = (src: Tensor, srcRow: number, dst: Tensor, dstRow: number, rowBytes: number, rows = 1) => {
  if (rows > 0) encoder().copyBufferToBuffer(src.buffer, srcRow * rowBytes, dst.buffer, dstRow * rowBytes, rows * rowBytes);
};

export async function generate(host: GenHost, prompts: Prompt[], opts: GenerateOptions): Promise<Int32Array[]> {
  return (await generateDetailed(host, prompts, opts)).ids;
}

export async function generateDetailed(host: GenHost, prompts: Prompt[], opts: GenerateOptions): Promise<Generated> {
  checkOptions(opts);
  const t = host.config.text, nL = t.numHiddenLayers, Hq = t.numAttentionHeads, Hkv = t.numKeyValueHeads, D = t.headDim;
  const kvRow = Hkv * D * 4, qRow = Hq * D * 4;
  const ctx = host.ctx(opts.lora ?? true);
  const rng = new Rng(opts.seed ?? 0);
  const stop = new Set(opts.stopIds);
  if (!prompts.length || opts.maxNewTokens === 0) return { ids: prompts.map(() => new Int32Array(0)), logprobs: prompts.map(() => new Float32Array(0)) };
  for (const [i, p] of prompts.entries()) {
    if (p.inputIds.length >= host.contextLength) throw new Error(`prompt ${i} has ${p.inputIds.length} tokens: no room to generate within the model's context of ${host.contextLength} tokens`);
  }

  const seqs: Seq[] = [];
  const lastRows: Tensor[] = [];
  const release = () => {
    for (const s of seqs) for (const c of [...s.k, ...s.v]) c.release();
    for (const r of lastRows) r.release();
  };
  try {
    // ---- prefill, once per distinct prompt (same ids and the same image input object)
    const imgIds = new Map<object, number>();
    const keyOf = (p: Prompt) => `${p.images ? (p.images.cacheKey ?? imgIds.get(p.images) ?? imgIds.set(p.images, imgIds.size).get(p.images)) : '-'}|${p.inputIds.join(',')}`;
    const first = new Map<string, number>();
    for (const [b, p] of prompts.entries()) {
      const key = keyOf(p);
      const L = p.inputIds.length, cap = Math.min(L + opts.maxNewTokens, host.contextLength);
      const s: Seq = { prompt: b, len: L, cap, ropeDelta: 0, k: [], v: [], out: [], lp: [], done: false, seen: new Set(p.inputIds) };
      seqs.push(s);
      for (let li = 0; li < nL; li++) {
        s.k.push(empty([cap, Hkv, D], 'f32', `kcache${b}.${li}`));
        s.v.push(empty([cap, Hkv, D], 'f32', `vcache${b}.${li}`));
      }
      const src = first.get(key);
      if (src !== undefined) {
        const o = seqs[src];
        s.ropeDelta = o.ropeDelta;
        for (let li = 0; li < nL; li++) {
          copyRows(o.k[li], 0, s.k[li], 0, kvRow, L);
          copyRows(o.v[li], 0, s.v[li], 0, kvRow, L);
        }
        lastRows.push(lastRows[src]);
        continue;
      }
      first.set(key, b);
      const pre = await host.prepare(p);
      s.ropeDelta = pre.ropeDelta;
      const attend: Attend = (li, q, k, v) => {
        copyRows(k, 0, s.k[li], 0, kvRow, L);
        copyRows(v, 0, s.v[li], 0, kvRow, L);
        const a = attentionCausal(q, k, v);
        a.lse.release();
        return { out: a.out };
      };
      let x = pre.x;
      for (let li = 0; li < nL; li++) {
        const r = layerForward(ctx, li, x, pre.rope, { keep: false, attend });
        x.release();
        x = r.out;
      }
      pre.rope.cos.release();
      pre.rope.sin.release();
      const idx = fromData(Int32Array.of(L - 1), [1], 'i32', 'last_row');
      lastRows.push(gatherRows(x, idx));
      idx.release();
      x.release();
    }
    // final norm of each prompt's last row, stacked [B, H]
    const H = t.hiddenSize;
    let hs = empty([seqs.length, H], 'f32', 'gen.hidden');
    lastRows.forEach((r, b) => copyRows(r, 0, hs, b, H * 4));
    const nf = rmsnorm(hs, ctxNorm(ctx), t.rmsNormEps);
    hs.release();
    nf.rstd.release();
    await choose(ctx, nf.y, seqs, opts, rng, stop);
    nf.y.release();

    // ---- decode
    for (;;) {
      const act = seqs.filter((s) => !s.done);
      if (!act.length) break;
      const n = act.length;
      const ids = fromData(Int32Array.from(act, (s) => s.out[s.out.length - 1]), [n], 'i32', 'gen.ids');
      let x = embedding(ids, ctx.w.embed.map((s) => s.t));
      ids.release();
      const pos = new Int32Array(3 * n);
      act.forEach((s, i) => { pos[i] = pos[n + i] = pos[2 * n + i] = s.len + s.ropeDelta; });
      const rope = mropeTables(pos, n, t.mropeSection, t.ropeTheta, D);
      const attend: Attend = (li, q, k, v) => {
        act.forEach((s, i) => {
          copyRows(k, i, s.k[li], s.len, kvRow);
          copyRows(v, i, s.v[li], s.len, kvRow);
        });
        if (n === 1) {
          const a = attentionCausal(q, act[0].k[li], act[0].v[li], { kvLen: act[0].len + 1 });
          a.lse.release();
          return { out: a.out };
        }
        const out = empty([n, Hq, D], 'f32', 'gen.attn');
        act.forEach((s, i) => {
          const qi = empty([1, Hq, D], 'f32', 'gen.q');
          copyRows(q, i, qi, 0, qRow);
          const a = attentionCausal(qi, s.k[li], s.v[li], { kvLen: s.len + 1 });
          copyRows(a.out, 0, out, i, qRow);
          for (const tt of [qi, a.out, a.lse]) tt.release();
        });
        return { out };
      };
      for (let li = 0; li < nL; li++) {
        const r = layerForward(ctx, li, x, rope, { keep: false, attend });
        x.release();
        x = r.out;
      }
      rope.cos.release();
      rope.sin.release();
      for (const s of act) s.len++;
      const n2 = rmsnorm(x, ctxNorm(ctx), t.rmsNormEps);
      x.release();
      n2.rstd.release();
      hs = n2.y;
      await choose(ctx, hs, act, opts, rng, stop);
      hs.release();
    }
  } finally {
    release();
  }
  return { ids: seqs.map((s) => Int32Array.from(s.out)), logprobs: seqs.map((s) => Float32Array.from(s.lp)) };
}

function ctxNorm(ctx: TextCtx): Tensor {
  return ctx.w.get('model.norm.weight');
}

/** Next token of every row of hs [n, H] (row i = seqs[i]); marks finished sequences. */
async function choose(ctx: TextCtx, hs: Tensor, seqs: Seq[], opts: GenerateOptions, rng: Rng, stop: Set<number>): Promise<void> {
  let next: number[], lps: number[];
  const T = opts.temperature ?? 0, penalty = opts.repetitionPenalty ?? 1;
  if (!(T > 0) && penalty === 1) {
    const am = argmaxIds(ctx, hs);
    next = Array.from(await readI32(am));
    lps = next.map(() => NaN);
    am.release();
  } else {
    const V = ctx.cfg.text.vocabSize, n = hs.shape[0];
    // one uniform per row, in row order: the CPU sampler's RNG stream (greedy draws none)
    const u = T > 0 ? Array.from({ length: n }, () => rng.next()) : [];
    // logits [n, V] assembled on the GPU from the vocabulary shards (row r, shard i at r·V + v0)
    const logits = empty([n, V], 'f32', 'gen.logits');
    for (const [i, s] of ctx.w.lmHead.entries()) {
      const c = logitsChunk(ctx, hs, i), vc = c.shape[1];
      for (let r = 0; r < n; r++) encoder().copyBufferToBuffer(c.buffer, r * vc * 4, logits.buffer, (r * V + s.v0) * 4, vc * 4);
      c.release();
    }
    const gpuOk = penalty === 1 && (opts.sampler ?? defaultSampler()) === 'gpu' && !((opts.topK ?? 0) > SAMPLE_KMAX);
    let ids: Int32Array, lp: Float32Array;
    if (gpuOk) {
      const ut = fromData(Float32Array.from(u), [n], 'f32', 'gen.uniforms');
      const r = sampleRows(logits, ut, { temperature: T, topK: opts.topK, topP: opts.topP });
      const back = await readMany([r.ids, r.logprobs]);
      for (const t of [ut, r.ids, r.logprobs]) t.release();
      ids = back[0] as Int32Array;
      lp = back[1] as Float32Array;
    } else {
      ids = new Int32Array(n).fill(-1);
      lp = new Float32Array(n);
    }
    // rows the GPU handed back (or all, on the CPU path): the CPU sampler with the same uniform
    const cpuRows = [...ids.keys()].filter((r) => ids[r] < 0);
    if (cpuRows.length) {
      const [all] = await readMany([logits]);
      for (const r of cpuRows) {
        const row = (all as Float32Array).subarray(r * V, (r + 1) * V);
        if (penalty !== 1) applyRepetitionPenalty(row, seqs[r].seen, penalty);
        ids[r] = T > 0 ? sampleTokenU(row, opts, u[r]) : argmax(row);
        lp[r] = T > 0 ? logprobAt(row, ids[r], T) : NaN;
      }
    }
    logits.release();
    next = Array.from(ids);
    lps = Array.from(lp);
  }
  seqs.forEach((s, i) => {
    s.out.push(next[i]);
    s.lp.push(lps[i]);
    s.seen.add(next[i]);
    // the last token is never fed back, so a full cache only ends the sequence at the next step
    if (stop.has(next[i]) || s.out.length >= opts.maxNewTokens || s.len >= s.cap) s.done = true;
  });
  if (opts.onToken && (await opts.onToken(seqs.map((s, i) => ({ prompt: s.prompt, id: next[i], logprob: lps[i] }))))) for (const s of seqs) s.done = true;
}
