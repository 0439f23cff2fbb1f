// Bench rows of the fused lm_head and GPU sampling (the bench JSON row schema: { group, name,
// shape, ours_ms, peers: { <peer>: ms } }); every comparison is in the same run on the same adapter.
//   lm_head   fused lm_head + log-softmax gather, forward + backward of a train step (peer: the
//             earlier chunked path, model/text.ts lmHead 'chunked'), best of `reps`
//   decode    one decode step of a batch of sampled sequences on the demo model (peer: the CPU
//             sampler reading [n, 151936] logits back); and demo-model SFT / GRPO steps, after vs before
import { flush } from '../gpu/kernel.ts';
import { gpu } from '../gpu/device.ts';
import { fromData, type Tensor } from '../gpu/tensor.ts';
import { lmHeadBackward, lmHeadScore, releaseBlocks, type LmHeadPath, type TextCtx } from '../model/text.ts';
import { setDefaultSampler } from '../model/generate.ts';
import { Qwen2_5_VL } from '../model/qwen2_5_vl.ts';
import { tinySource } from '../model/tiny.ts';
import { targetRegex } from '../model/lora.ts';
import { loadDefaultTokenizer } from '../data/tokenizer.ts';
import { syntheticGrounding, syntheticRlPrompts } from '../data/synthetic.ts';
import { Trainer, type Method, type TrainExample } from '../train/trainer.ts';
import { trainOptionsOf } from '../session/run.ts';
import { DEFAULT_CONFIG } from '../config/config.ts';

import type { BenchRow } from './report.ts';

const TRAIN_DEFAULTS = trainOptionsOf(DEFAULT_CONFIG);

type Log = (line: string) => void;

async function idle(): Promise<void> {
  flush();
  await gpu().device.queue.onSubmittedWorkDone();
}

function rnd(n: number, seed: number, a: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 2 * a;
  }
  return out;
}

export interface LmHeadShape { T: number; H: number; V: number; what: string }

/** Fused vs chunked lm_head + log-softmax, forward + backward (train), W packed bf16 in shards of 16384 rows. */
export async function benchLmHeadRows(shapes: LmHeadShape[], o: { reps?: number; log?: Log } = {}): Promise<BenchRow[]> {
  const reps = o.reps ?? 2, rows: BenchRow[] = [];
  for (const s of shapes) {
    const { T, H, V } = s, C = 16384;
    const shards: { t: Tensor; v0: number }[] = [];
    for (let v0 = 0; v0 < V; v0 += C) {
      const n = Math.min(C, V - v0);
      shards.push({ t: fromData(rnd(n * H, v0 + 1, 0.05), [n, H], 'bf16', `bench.lm_head[${v0}]`), v0 });
    }
    const last = fromData(rnd(T * H, 7, 1), [T, H], 'f32', 'bench.hidden');
    const idx = Int32Array.from({ length: T }, (_, i) => i), targets = Int32Array.from({ length: T }, (_, i) => (i * 7919) % V);
    const dl = new Float32Array(T).fill(-1 / T);
    const best: Record<LmHeadPath, number> = { fused: Infinity, chunked: Infinity };
    for (let r = 0; r < reps; r++) {
      for (const path of ['chunked', 'fused'] as LmHeadPath[]) {
        const ctx = { cfg: { text: { vocabSize: V, hiddenSize: H } }, w: { lmHead: shards, vocabChunk: C }, lmHead: path } as unknown as TextCtx;
        await idle();
        const t0 = performance.now();
        const b = lmHeadScore(ctx, last, idx, targets, true);
        lmHeadBackward(ctx, b, idx, dl, T).release();
        await idle();
        best[path] = Math.min(best[path], performance.now() - t0);
        releaseBlocks(b);
      }
    }
    for (const t of [last, ...shards.map((x) => x.t)]) t.release();
    const row: BenchRow = { group: 'lm_head', name: `lm_head+loss fwd+bwd, ${s.what}`, shape: `${T}x${V}x${H}`, ours_ms: best.fused, peers: { chunked: best.chunked } };
    o.log?.(`${row.name} [${row.shape}]: fused ${best.fused.toFixed(0)} ms, chunked ${best.chunked.toFixed(0)} ms (chunked ÷ fused ${(best.chunked / best.fused).toFixed(2)}×)`);
    rows.push(row);
  }
  return rows;
}

const LORA = { r: 8, loraAlpha: 16, loraDropout: 0, useRslora: false, targetModules: targetRegex() };

/**
 * Decode step time of a batch of `batch` sampled sequences on the built-in demo model (text prompt,
 * temperature 1): (time of N+1 new tokens − time of 1) / N, GPU sampler vs CPU sampler.
 */
export async function benchDecodeRows(o: { batch?: number; tokens?: number; reps?: number; log?: Log } = {}): Promise<BenchRow[]> {
  const batch = o.batch ?? 8, N = o.tokens ?? 8, reps = o.reps ?? 2;
  const model = await Qwen2_5_VL.load(tinySource(), { lora: LORA, loraSeed: 1 });
  const prompt = Int32Array.from({ length: 24 }, (_, i) => 100 + ((i * 37) % 5000));
  const prompts = Array.from({ length: batch }, () => ({ inputIds: prompt }));
  const time = async (sampler: 'gpu' | 'cpu', n: number) => {
    const t0 = performance.now();
    await model.generate(prompts, { maxNewTokens: n, temperature: 1, stopIds: [], seed: 3, sampler });
    return performance.now() - t0;
  };
  const best = { gpu: Infinity, cpu: Infinity };
  await time('gpu', 2);
  await time('cpu', 2);
  for (let r = 0; r < reps; r++) {
    for (const s of ['cpu', 'gpu'] as const) {
      const one = await time(s, 1), many = await time(s, N + 1);
      best[s] = Math.min(best[s], (many - one) / N);
    }
  }
  model.dispose();
  const row: BenchRow = { group: 'decode', name: `decode step, demo model, batch ${batch}, temperature 1`, shape: `${batch}x151936x128`, ours_ms: best.gpu, peers: { cpu_sampler: best.cpu } };
  o.log?.(`${row.name}: GPU sampler ${best.gpu.toFixed(0)} ms/step = ${((1000 * batch) / best.gpu).toFixed(1)} tokens/s; CPU sampler ${best.cpu.toFixed(0)} ms/step = ${((1000 * batch) / best.cpu).toFixed(1)} tokens/s`);
  return [row];
}

function examples(method: Method): TrainExample[] {
  if (method === 'sft') return syntheticGrounding({ count: 4, seed: 1 }).map((r) => ({ kind: 'sft', images: [r.image], messages: r.messages }));
  return syntheticRlPrompts({ count: 4, seed: 1 }).map((r) => ({ kind: 'rl', images: [r.image], prompt: r.prompt, reference: r.reference }));
}

export interface StepConfig { name: string; lmHead: LmHeadPath; sampler: 'gpu' | 'cpu' }

/**
 * Demo-model SFT and GRPO steps (ms, best of `reps` after one warm-up) per configuration, the
 * configurations' steps interleaved; the first configuration is "before" (the peer).
 */
export async function benchStepRows(o: { methods?: Method[]; configs?: StepConfig[]; reps?: number; log?: Log } = {}): Promise<BenchRow[]> {
  const configs = o.configs ?? [
    { name: 'before (chunked lm_head, CPU sampler)', lmHead: 'chunked', sampler: 'cpu' },
    { name: 'fused lm_head, GPU sampler', lmHead: 'fused', sampler: 'gpu' },
    { name: 'chunked lm_head, GPU sampler', lmHead: 'chunked', sampler: 'gpu' },
  ];
  const reps = o.reps ?? 2, rows: BenchRow[] = [];
  const tok = await loadDefaultTokenizer();
  for (const method of o.methods ?? (['sft', 'grpo'] as Method[])) {
    const runs = [];
    for (const c of configs) {
      const model = await Qwen2_5_VL.load(tinySource(), { lora: LORA, loraSeed: 1 });
      model.lmHead = c.lmHead;
      const tr = new Trainer(model, tok, examples(method), {
        ...TRAIN_DEFAULTS, method, optim: { ...TRAIN_DEFAULTS.optim, lrScheduler: 'constant', maxSteps: reps + 2 },
        grpo: { ...TRAIN_DEFAULTS.grpo, numGenerations: 4, maxNewTokens: 16, temperature: 1 },
      });
      runs.push({ c, model, tr, best: Infinity });
    }
    for (let r = 0; r <= reps; r++) {
      for (const x of runs) {
        setDefaultSampler(x.c.sampler);
        const t0 = performance.now();
        await x.tr.trainStep();
        if (r > 0) x.best = Math.min(x.best, performance.now() - t0); // step 0 warms up
      }
    }
    setDefaultSampler(undefined);
    const [before, ...after] = runs;
    for (const x of after) {
      const row: BenchRow = { group: method === 'sft' ? 'lm_head' : 'decode', name: `demo-model ${method} step: ${x.c.name}`, shape: 'demo model, 1 image', ours_ms: x.best, peers: { [before.c.name]: before.best } };
      o.log?.(`demo-model ${method} step: ${x.c.name} ${x.best.toFixed(0)} ms vs ${before.c.name} ${before.best.toFixed(0)} ms (${(before.best / x.best).toFixed(2)}× faster)`);
      rows.push(row);
    }
    for (const x of runs) {
      x.tr.dispose();
      x.model.dispose();
    }
  }
  return rows;
}
