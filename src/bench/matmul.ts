// Bench bodies for src/cli/bench.ts: matmul vs peers on the same device, and the other hot ops.
import { flush } from '../gpu/kernel.ts';
import { gpu } from '../gpu/device.ts';
import { empty, fromData, read, type Tensor } from '../gpu/tensor.ts';
import { matmul } from '../ops/matmul.ts';
import { jaxPeer, ortPeer, tfjsPeer, type Peer, type Prepared } from './peers.ts';
import type { BenchRow } from './report.ts';

export interface MatmulShape { m: number; n: number; k: number; what: string }
type Log = (line: string) => void;
type Add = (row: BenchRow) => void;
const ms = (v: number) => (Number.isFinite(v) ? v : null);

/** A peer that hangs (a wasm runtime stuck on the shared device) must not hang the bench. */
const PEER_TIMEOUT_MS = Number((globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.PATCHWORK_PEER_TIMEOUT_MS ?? 300_000);
function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer in ${PEER_TIMEOUT_MS / 1000} s (skipped)`)), PEER_TIMEOUT_MS); });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

async function idle(): Promise<void> {
  flush();
  await gpu().device.queue.onSubmittedWorkDone();
}

function rnd(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 0.2;
  }
  return out;
}

const pad = (s: string, n: number) => s.padStart(n);
const gf = (flops: number, ms: number) => (Number.isFinite(ms) ? (flops / ms / 1e6).toFixed(2) : '—');
/** ours ÷ peer in GFLOP/s = peer time ÷ our time */
const ratio = (oursMs: number, peerMs: number) => (Number.isFinite(oursMs) && Number.isFinite(peerMs) ? `${(peerMs / oursMs).toFixed(1)}×` : '—');

function oursPrepared(x: Tensor, w: Tensor, y: Tensor): Prepared {
  return {
    async time(reps) {
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) matmul(x, w, { out: y });
      await idle();
      return (performance.now() - t0) / reps;
    },
    async result() {
      matmul(x, w, { out: y });
      return read(y);
    },
    dispose() {},
  };
}

/** Time y = x·Wᵀ ([M,K]·[N,K]ᵀ) for ours (f32 W, bf16 W) and each peer; print GFLOP/s and ratios. */
export async function benchMatmul(shapes: MatmulShape[], o: { peers: string[]; rounds: number; log: Log; add?: Add }): Promise<void> {
  const { log } = o;
  const makers: Record<string, () => Promise<Peer>> = { tfjs: tfjsPeer, ort: ortPeer, jax: jaxPeer };
  const peers: Peer[] = [];
  const keys: string[] = [];
  const hung = new Set<string>(); // peers that timed out once are not asked again // the report's peer keys: tfjs, ort, jax (versions go to the log)
  const label: Record<string, string> = { tfjs: 'tf.js', ort: 'ORT', jax: 'jax-js' };
  const cols: string[] = [];
  for (const p of o.peers) {
    const mk = makers[p];
    if (!mk) { log(`peer "${p}" unknown (tfjs, ort, jax)`); continue; }
    try {
      const peer = await withTimeout(mk(), `peer ${p}`);
      peers.push(peer);
      keys.push(p);
      cols.push(label[p]);
      log(`peer: ${peer.name} (same device)`);
    } catch (e) {
      log(`peer ${p} SKIPPED: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  log('');
  log('matmul y = x·Wᵀ, x [M,K] f32, W [N,K]; GFLOP/s = 2·M·N·K / time per call (best of rounds); ratio = ours ÷ peer');
  const head = [pad('M×N×K', 16), pad('', 14), pad('ours f32', 9), pad('ours bf16', 10), ...cols.map((c) => pad(c, 8)), ...cols.map((c) => pad(`f32/${c}`, 11)), ...cols.map((c) => pad(`bf16/${c}`, 12))];
  log(head.join(' '));
  for (const s of shapes) {
    const { m, n, k } = s;
    const flops = 2 * m * n * k;
    const xv = rnd(m * k, 1), wv = rnd(n * k, 2);
    const x = fromData(xv, [m, k], 'f32', 'bench.x');
    const w32 = fromData(wv, [n, k], 'f32', 'bench.w32');
    const w16 = fromData(wv, [n, k], 'bf16', 'bench.w16');
    const y = empty([m, n], 'f32', 'bench.y');
    const impls: { name: string; p?: Prepared; err?: string; ms: number; once?: number; slow?: boolean }[] = [
      { name: 'ours f32', p: oursPrepared(x, w32, y), ms: Infinity },
      { name: 'ours bf16', p: oursPrepared(x, w16, y), ms: Infinity },
    ];
    for (const peer of peers) {
      if (hung.has(peer.name)) { impls.push({ name: peer.name, err: 'skipped: it hung on an earlier shape', ms: Infinity }); continue; }
      try {
        impls.push({ name: peer.name, p: await withTimeout(peer.prepare(m, n, k, xv, wv), `${peer.name} prepare`), ms: Infinity });
      } catch (e) {
        impls.push({ name: peer.name, err: (e as Error).message.split('\n')[0], ms: Infinity });
      }
    }
    // sanity: every implementation computes the same product (small shapes only: it costs a call)
    let ref: Float32Array | undefined;
    if (flops < 1e8) {
      for (const im of impls) {
        if (!im.p) continue;
        try {
          const r = await withTimeout(im.p.result(), `${im.name} result`);
          if (!ref) { ref = r; continue; }
          let err = 0, scale = 0;
          for (let i = 0; i < ref.length; i++) { err = Math.max(err, Math.abs(r[i] - ref[i])); scale = Math.max(scale, Math.abs(ref[i])); }
          if (!(err <= 1e-2 * scale + 1e-4)) log(`  WARNING ${im.name} differs from ours f32 at ${m}×${n}×${k}: max err ${err.toExponential(2)}`);
        } catch (e) {
          im.err = (e as Error).message.split('\n')[0];
          im.p = undefined;
        }
      }
    }
    const reps = Math.max(1, Math.min(20, Math.round(2e8 / flops)));
    for (const im of impls) { // warm-up: compile pipelines, upload, allocate
      if (!im.p) continue;
      try { im.once = await withTimeout(im.p.time(1), `${im.name} warm-up`); } catch (e) { im.err = (e as Error).message.split('\n')[0]; im.p = undefined; }
    }
    for (const im of impls) if ((im.once ?? 0) > 20_000) { im.ms = im.once!; im.slow = true; } // compile is noise next to 20+ s
    for (let r = 0; r < o.rounds; r++) {
      for (const im of impls) {
        if (!im.p || im.slow) continue;
        try { im.ms = Math.min(im.ms, await withTimeout(im.p.time(reps), `${im.name} timing`)); } catch (e) { im.err = (e as Error).message.split('\n')[0]; im.p = undefined; }
      }
    }
    for (const im of impls) if (im.err?.includes('no answer in')) hung.add(im.name);
    for (const im of impls) im.p?.dispose();
    for (const t of [x, w32, w16, y]) t.release();
    const [o32, o16, ...ps] = impls;
    const line = [
      pad(`${m}×${n}×${k}`, 16), pad(s.what, 14), pad(gf(flops, o32.ms), 9), pad(gf(flops, o16.ms), 10),
      ...ps.map((p) => pad(gf(flops, p.ms), 8)),
      ...ps.map((p) => pad(ratio(o32.ms, p.ms), 11)),
      ...ps.map((p) => pad(ratio(o16.ms, p.ms), 12)),
    ];
    log(line.join(' '));
    const peerMs = Object.fromEntries(ps.map((p, i) => [keys[i], ms(p.ms)]));
    for (const [oi, dt] of [[o32, 'f32'], [o16, 'bf16']] as const) {
      o.add?.({ group: 'matmul', name: `${s.what} ${dt} W`, shape: `${m}×${n}×${k}`, ours_ms: ms(oi.ms), peers: peerMs, extra: { gflops: Number.isFinite(oi.ms) ? flops / oi.ms / 1e6 : null } });
    }
    for (const im of impls) if (im.err) log(`  ${im.name}: ${im.err}`);
    const slow = impls.filter((im) => im.slow).map((im) => im.name);
    if (slow.length) log(`  (${slow.join(', ')}: over 20 s per call, timed on one call)`);
  }
}

/** Time per call of attention, RMSNorm and log-softmax gather at Qwen2.5-VL-3B text shapes. */
export async function benchOps(o: { log: Log; add?: Add; tokens?: number }): Promise<void> {
  const { log } = o;
  const T = o.tokens ?? 400, H = 2048, Hq = 16, Hkv = 2, D = 128, V = 151936;
  log('');
  log(`other ops at 3B shapes (T=${T} tokens, hidden ${H}, ${Hq}/${Hkv} heads × ${D}, vocab ${V}); ms per call`);
  const time = async (fn: () => Tensor[], reps: number): Promise<number> => {
    for (const t of fn()) t.release(); // warm-up / compile
    await idle();
    let best = Infinity;
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      const outs = fn();
      await idle();
      best = Math.min(best, performance.now() - t0);
      for (const t of outs) t.release();
    }
    return best;
  };
  const row = (name: string, ms: number | string) => log(`  ${name.padEnd(62)} ${typeof ms === 'number' ? `${ms.toFixed(1)} ms` : ms}`);

  // RMSNorm
  try {
    const m = await import('../ops/rmsnorm.ts');
    const x = fromData(rnd(T * H, 3), [T, H]), w = fromData(rnd(H, 4).map((v) => 1 + v), [H], 'bf16'), dy = fromData(rnd(T * H, 5), [T, H]);
    row(`rmsnorm forward [${T}, ${H}] (bf16 weight)`, await time(() => { const r = m.rmsnorm(x, w, 1e-6); return [r.y, r.rstd]; }, 3));
    const f = m.rmsnorm(x, w, 1e-6);
    row(`rmsnorm backward (dx)`, await time(() => { const r = m.rmsnormBackward(dy, x, w, f.rstd); return [r.dx, ...(r.dweight ? [r.dweight] : [])]; }, 3));
    for (const t of [x, w, dy, f.y, f.rstd]) t.release();
  } catch (e) {
    row('rmsnorm', `skipped: ${(e as Error).message.split('\n')[0]}`);
  }

  // causal GQA attention (text prefill)
  try {
    const m = await import('../ops/attention.ts');
    const q = fromData(rnd(T * Hq * D, 6), [T, Hq, D]), k = fromData(rnd(T * Hkv * D, 7), [T, Hkv, D]), v = fromData(rnd(T * Hkv * D, 8), [T, Hkv, D]);
    const dy = fromData(rnd(T * Hq * D, 9), [T, Hq, D]);
    const fwd = await time(() => { const r = m.attentionCausal(q, k, v); return [r.out, r.lse]; }, 2);
    row(`attention causal GQA forward q [${T},${Hq},${D}] kv [${T},${Hkv},${D}]`, fwd);
    const f = m.attentionCausal(q, k, v);
    const bwd = await time(() => { const r = m.attentionCausalBackward(q, k, v, f.out, f.lse, dy); return [r.dq, r.dk, r.dv]; }, 2);
    row('attention causal GQA backward (dq, dk, dv)', bwd);
    const shape = `q [${T},${Hq},${D}] kv [${T},${Hkv},${D}]`;
    o.add?.({ group: 'attention_fwd', name: 'text causal GQA (attention.wgsl)', shape, ours_ms: fwd, peers: {} });
    o.add?.({ group: 'attention_bwd', name: 'text causal GQA (attention.wgsl)', shape, ours_ms: bwd, peers: {}, extra: { bwd_over_fwd: bwd / fwd } });
    for (const t of [q, k, v, dy, f.out, f.lse]) t.release();
  } catch (e) {
    row('attention', `skipped: ${(e as Error).message.split('\n')[0]}`);
  }

  // log-softmax gather over the full vocab (chunked when the logits exceed one binding)
  try {
    const m = await import('../ops/softmaxGather.ts');
    const targets = fromData(Int32Array.from({ length: T }, (_, i) => (i * 7919) % V), [T], 'i32');
    const maxBind = gpu().limits.maxStorageBufferBindingSize;
    const chunk = T * V * 4 <= maxBind ? V : Math.floor(maxBind / (T * 4) / 1024) * 1024;
    const logits = fromData(rnd(T * chunk, 10).map((v) => v * 50), [T, chunk], 'f32', 'bench.logits');
    const dlogp = fromData(new Float32Array(T).fill(1 / T), [T]);
    const nChunks = Math.ceil(V / chunk);
    const note = nChunks > 1 ? ` in ${nChunks} chunks of ${chunk}` : '';
    let lse: Tensor | undefined;
    const fwd = await time(() => {
      const st = m.lsgBegin(targets);
      for (let c = 0; c < nChunks; c++) m.lsgChunk(st, { t: logits, col0: 0, vc: Math.min(chunk, V - c * chunk) }, c * chunk);
      const r = m.lsgFinish(st);
      lse?.release();
      lse = r.lse;
      return [r.logp, r.argmax, st.state];
    }, 2);
    row(`log-softmax gather forward [${T}, ${V}]${note}`, fwd);
    const bwd = await time(() => {
      const outs: Tensor[] = [];
      for (let c = 0; c < nChunks; c++) outs.push(m.lsgBackwardChunk({ t: logits, col0: 0, vc: Math.min(chunk, V - c * chunk) }, targets, lse!, dlogp, c * chunk));
      return outs;
    }, 2);
    row(`log-softmax gather backward (dlogits)${note}`, bwd);
    // the gather alone, logits given (not the lm_head matmul): today's chunked path after x·Wᵀ
    o.add?.({ group: 'lm_head', name: 'log-softmax gather fwd, logits given (softmax_gather.wgsl)', shape: `[${T}, ${V}]`, ours_ms: fwd, peers: {} });
    o.add?.({ group: 'lm_head', name: 'log-softmax gather bwd, logits given (softmax_gather.wgsl)', shape: `[${T}, ${V}]`, ours_ms: bwd, peers: {} });
    for (const t of [targets, logits, dlogp, lse!]) t.release();
  } catch (e) {
    row('log-softmax gather', `skipped: ${(e as Error).message.split('\n')[0]}`);
  }
}
