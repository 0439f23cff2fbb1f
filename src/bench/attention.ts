// Attention bench at Qwen2.5-VL-3B shapes: both of our kernel variants (naive register kernel and
// flash), forward and backward, and ONNX Runtime Web's own attention operators on the SAME WebGPU
// device in the same run (com.microsoft GroupQueryAttention for causal GQA text, MultiHeadAttention
// for vision windows; ORT has no training kernels, so the backward rows have no ORT figure).
// Returns rows in the bench JSON schema: { group, name, shape, ours_ms, peers: { <peer>: ms } }.
import { flush } from '../gpu/kernel.ts';
import { gpu } from '../gpu/device.ts';
import { fromData, readMany, type Tensor } from '../gpu/tensor.ts';
import {
  attentionCausal, attentionCausalBackward, attentionVarlen, attentionVarlenBackward, attentionVariant,
  type AttentionVariant, type AttnForward, type AttnGrads,
} from '../ops/attention.ts';
import { gqaModel, mhaModel } from './onnx.ts';
import { ortPeer } from './peers.ts';

type Log = (line: string) => void;

export interface AttentionRow {
  group: 'attention_fwd' | 'attention_bwd';
  name: string;
  shape: string;
  /** the variant attentionVariant() picks on this adapter for this direction */
  ours_ms: number;
  /** naive / flash: each of our variants forced; ort: ONNX Runtime Web (forward only) */
  peers: { ort?: number; naive?: number; flash?: number };
}

/** causal GQA over one sequence of t tokens, or non-causal attention in `windows` windows of t tokens */
export interface AttnBenchShape { name: string; t: number; hq: number; hkv: number; d: number; windows?: number }

export const ATTN_SHAPES_3B: AttnBenchShape[] = [
  { name: '3B text causal GQA', t: 400, hq: 16, hkv: 2, d: 128 },
  { name: '3B vision window', t: 64, hq: 16, hkv: 16, d: 80, windows: 16 },
];

async function idle(): Promise<void> {
  flush();
  await gpu().device.queue.onSubmittedWorkDone();
}

function rnd(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 2;
  }
  return out;
}

/** ORT's output agrees with ours: the matmul peers' rule, max error ≤ 1e-2 · max |ours| + 1e-4. */
export function ortAgrees(theirs: ArrayLike<number>, ours: ArrayLike<number>): boolean {
  let scale = 0;
  for (let i = 0; i < ours.length; i++) scale = Math.max(scale, Math.abs(ours[i]));
  return theirs.length === ours.length && maxDiff(theirs, ours) <= 1e-2 * scale + 1e-4;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** ORT Web's attention on our device: returns a timer (best ms of `reps` single calls) and one output. */
async function ortAttention(s: AttnBenchShape, q: Float32Array, k: Float32Array, v: Float32Array): Promise<{ time(reps: number): Promise<number>; result(): Promise<Float32Array>; dispose(): void }> {
  await ortPeer(); // configures ORT's env for our device (wasm paths, shared uploads, the keep-alive session)
  const ort = await import('onnxruntime-web/webgpu');
  const device = gpu().device;
  const b = s.windows ?? 1;
  const bytes = s.windows ? mhaModel(b, s.t, s.hq, s.d) : gqaModel(s.t, s.hq, s.hkv, s.d);
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['webgpu'], preferredOutputLocation: 'gpu-buffer', graphOptimizationLevel: 'all' });
  const bufs: GPUBuffer[] = [];
  const input = (x: Float32Array, dims: number[]) => {
    const buf = device.createBuffer({ size: x.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
    device.queue.writeBuffer(buf, 0, x);
    bufs.push(buf);
    return ort.Tensor.fromGpuBuffer(buf as unknown as Parameters<typeof ort.Tensor.fromGpuBuffer>[0], { dataType: 'float32', dims });
  };
  const feeds = { Q: input(q, [b, s.t, s.hq * s.d]), K: input(k, [b, s.t, s.hkv * s.d]), V: input(v, [b, s.t, s.hkv * s.d]) };
  const disposeAll = (r: Record<string, { dispose(): void }>) => { for (const t of Object.values(r)) t.dispose(); };
  return {
    async time(reps) { // best of `reps` single calls, as ours are timed
      let best = Infinity;
      for (let i = 0; i < reps; i++) {
        const t0 = performance.now();
        const r = await session.run(feeds);
        await idle();
        best = Math.min(best, performance.now() - t0);
        disposeAll(r);
      }
      return best;
    },
    async result() {
      const r = await session.run(feeds);
      const y = Float32Array.from((await r.Y.getData(true)) as Float32Array);
      disposeAll(r);
      return y;
    },
    dispose() { void session.release(); for (const x of bufs) x.destroy(); },
  };
}

/**
 * Time forward and backward of both variants (interleaved, best of `reps`, one warm-up call each)
 * and ORT's forward at each shape. The machine is shared: only ratios within one run mean much.
 */
export async function benchAttention(o: { log?: Log; note?: (text: string) => void; shapes?: AttnBenchShape[]; reps?: number; ort?: boolean; variants?: AttentionVariant[] } = {}): Promise<AttentionRow[]> {
  const log = o.log ?? (() => {});
  const reps = o.reps ?? 2;
  const rows: AttentionRow[] = [];
  const chosen = attentionVariant();
  log('');
  log(`attention (ms per call; ours = the tuned variant: forward ${chosen.fwd}, backward ${chosen.bwd})`);
  for (const s of o.shapes ?? ATTN_SHAPES_3B) {
    const n = s.t * (s.windows ?? 1);
    const shape = s.windows ? `${s.windows} windows × ${s.t} tokens, ${s.hq} heads × ${s.d}` : `T=${s.t}, ${s.hq} q / ${s.hkv} kv heads × ${s.d}, causal`;
    const qd = rnd(n * s.hq * s.d, 1), kd = rnd(n * s.hkv * s.d, 2), vd = rnd(n * s.hkv * s.d, 3);
    const q = fromData(qd, [n, s.hq, s.d], 'f32', 'bench.q');
    const k = fromData(kd, [n, s.hkv, s.d], 'f32', 'bench.k');
    const v = fromData(vd, [n, s.hkv, s.d], 'f32', 'bench.v');
    const dy = fromData(rnd(n * s.hq * s.d, 4), [n, s.hq, s.d], 'f32', 'bench.dy');
    const cu = s.windows ? fromData(Int32Array.from({ length: s.windows + 1 }, (_, i) => i * s.t), [s.windows + 1], 'i32', 'bench.cu') : undefined;
    const fwd = (variant: AttentionVariant): AttnForward => (cu ? attentionVarlen(q, k, v, cu, { variant, maxSeqlen: s.t }) : attentionCausal(q, k, v, { variant }));
    const bwd = (f: AttnForward, variant: AttentionVariant): AttnGrads => (cu
      ? attentionVarlenBackward(q, k, v, f.out, f.lse, dy, cu, { variant, maxSeqlen: s.t })
      : attentionCausalBackward(q, k, v, f.out, f.lse, dy, { variant }));
    const variants: AttentionVariant[] = o.variants ?? ['naive', 'flash'];
    const ms = { naive: { fwd: Infinity, bwd: Infinity }, flash: { fwd: Infinity, bwd: Infinity } };
    const saved = new Map<AttentionVariant, AttnForward>();
    for (let r = 0; r <= reps; r++) { // round 0 compiles and warms up
      for (const vv of variants) {
        let t0 = performance.now();
        const f = fwd(vv);
        await idle();
        const tf = performance.now() - t0;
        t0 = performance.now();
        const g = bwd(f, vv);
        await idle();
        const tb = performance.now() - t0;
        if (r > 0) { ms[vv].fwd = Math.min(ms[vv].fwd, tf); ms[vv].bwd = Math.min(ms[vv].bwd, tb); }
        for (const x of [g.dq, g.dk, g.dv]) x.release();
        saved.get(vv)?.out.release();
        saved.get(vv)?.lse.release();
        saved.set(vv, f);
      }
    }
    const outs = await readMany(variants.map((vv) => saved.get(vv)!.out));
    const on = outs[0];
    log(`  ${s.name} (${shape})${outs.length > 1 ? `: flash vs naive output max |diff| ${maxDiff(outs[0], outs[1]).toExponential(1)}` : ''}`);
    let ort: number | undefined;
    if (o.ort !== false) {
      try {
        const peer = await ortAttention(s, qd, kd, vd);
        const y = await peer.result(); // warm-up, and a check that it computes the same thing
        const err = maxDiff(y, on);
        if (ortAgrees(y, on)) {
          await peer.time(1);
          ort = await peer.time(reps);
          log(`  ORT Web output vs ours max |diff| ${err.toExponential(1)}`);
        } else {
          // a wrong answer is no peer: timing it would compare us with a kernel that does not do the job
          const msg = `ORT Web ${s.windows ? 'MultiHeadAttention' : 'GroupQueryAttention'} at ${shape} differs from ours by ${err.toExponential(1)}: its figure is left out` +
            (gpu().hasSubgroups ? ' (ORT 1.30 attention kernels that use subgroups compute wrong results on SwiftShader; PATCHWORK_SUBGROUPS=0 gives every kernel a device without them)' : '');
          log(`  WARNING ${msg}`);
          o.note?.(msg);
        }
        peer.dispose();
      } catch (e) {
        log(`  ORT Web attention: skipped: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    for (const t of [q, k, v, dy, cu, ...[...saved.values()].flatMap((f) => [f.out, f.lse])]) t?.release();
    const fmt = (x?: number) => (x === undefined || !Number.isFinite(x) ? '—' : `${x.toFixed(1)} ms`);
    rows.push({ group: 'attention_fwd', name: s.name, shape, ours_ms: ms[chosen.fwd].fwd, peers: { naive: ms.naive.fwd, flash: ms.flash.fwd, ...(ort === undefined ? {} : { ort }) } });
    rows.push({ group: 'attention_bwd', name: s.name, shape, ours_ms: ms[chosen.bwd].bwd, peers: { naive: ms.naive.bwd, flash: ms.flash.bwd } });
    const best = (dir: 'fwd' | 'bwd') => Math.min(ms.naive[dir], ms.flash[dir]);
    log(`    forward   naive ${fmt(ms.naive.fwd)}, flash ${fmt(ms.flash.fwd)}, ORT ${fmt(ort)}${ort ? `; ours ${(ort / ms[chosen.fwd].fwd).toFixed(2)}× ORT's speed` : ''}`);
    log(`    backward  naive ${fmt(ms.naive.bwd)}, flash ${fmt(ms.flash.bwd)}; backward ÷ forward: naive ${(ms.naive.bwd / ms.naive.fwd).toFixed(2)}, flash ${(ms.flash.bwd / ms.flash.fwd).toFixed(2)}, ours ${(ms[chosen.bwd].bwd / ms[chosen.fwd].fwd).toFixed(2)}, best ÷ best ${(best('bwd') / best('fwd')).toFixed(2)}`);
  }
  return rows;
}
