// npm run bench [-- --quick] [-- --peers=tfjs,ort,jax] [-- --rounds=N] [-- --no-train]
// Matmul GFLOP/s of ours (f32 and packed-bf16 weights) and of peers on the same WebGPU device in
// the same run (tf.js WebGPU, ONNX Runtime Web WebGPU EP, jax-js), then time per call of
// attention, RMSNorm and log-softmax gather at Qwen2.5-VL-3B shapes, training steps/s and tokens/s
// per method on the tiny model, and memory in use.
import { nodeGpu, closeGpu } from '../gpu/node.ts';
import { matmulVariant, setMatmulVariant, tuneMatmul } from '../ops/matmul.ts';
import { benchMatmul, benchOps, type MatmulShape } from '../bench/matmul.ts';
import { fmtBytes, memory } from '../gpu/tensor.ts';
import { benchTraining } from '../bench/train.ts';
import { benchDecodeRows, benchLmHeadRows, benchStepRows } from '../bench/lmHead.ts';
import { benchAttention } from '../bench/attention.ts';
import { attentionVariant, tuneAttention } from '../ops/attention.ts';

const args = process.argv.slice(2);
const opt = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
const quick = args.includes('--quick');
const peers = (opt('peers') ?? 'tfjs,ort,jax').split(',').filter(Boolean);
const variant = opt('variant');

const g = await nodeGpu();
console.log(`adapter: ${g.adapterName}`);
console.log(`limits: maxStorageBufferBindingSize ${fmtBytes(g.limits.maxStorageBufferBindingSize)}, maxBufferSize ${fmtBytes(g.limits.maxBufferSize)}, maxComputeWorkgroupStorageSize ${g.limits.maxComputeWorkgroupStorageSize}, features [${g.features.join(', ')}]`);

if (variant === 'reg' || variant === 'tiled') {
  setMatmulVariant(variant);
  console.log(`matmul variant: ${variant} (forced by --variant)`);
} else {
  const t = await tuneMatmul();
  console.log(`matmul variant: ${matmulVariant()} (tuned on 256×512×512: reg ${t.ms.reg.toFixed(1)} ms, tiled ${t.ms.tiled.toFixed(1)} ms)`);
}

const tiny: MatmulShape[] = [
  { m: 46, n: 64, k: 64, what: 'tiny q/o proj' },
  { m: 46, n: 160, k: 64, what: 'tiny gate/up' },
  { m: 46, n: 64, k: 160, what: 'tiny down' },
  { m: 46, n: 1024, k: 64, what: 'tiny lm_head' },
];
const big: MatmulShape[] = [
  { m: 400, n: 2048, k: 2048, what: '3B q/o proj' },
  { m: 400, n: 11008, k: 2048, what: '3B gate/up' },
  { m: 400, n: 2048, k: 11008, what: '3B down' },
];
const shapes = quick ? tiny : [...tiny, ...big];
const rounds = Number(opt('rounds') ?? (quick ? 3 : 2));

await benchMatmul(shapes, { peers, rounds, log: console.log });
if (!quick) await benchOps({ log: console.log });
// fused lm_head vs chunked, decode with the GPU sampler vs the CPU one (rows: src/bench/lmHead.ts)
if (!args.includes('--no-lm-head')) {
  console.log('\nlm_head + log-softmax (fused vs chunked) and decode (GPU vs CPU sampler), same run:');
  await benchLmHeadRows([{ T: 20, H: 128, V: 151936, what: 'demo model' }, ...(quick ? [] : [{ T: 64, H: 2048, V: 151936, what: '3B' }])], { reps: quick ? 1 : 2, log: console.log });
  await benchDecodeRows({ batch: 8, reps: quick ? 1 : 2, log: console.log });
  if (args.includes('--steps-lm-head')) await benchStepRows({ log: console.log });
}
if (!quick) {
  const t = await tuneAttention();
  const f = (x: { fwd: number; bwd: number }) => `${x.fwd.toFixed(0)}/${x.bwd.toFixed(0)} ms`;
  console.log(`attention variant: forward ${attentionVariant().fwd}, backward ${attentionVariant().bwd} (tuned fwd/bwd: naive ${f(t.ms.naive)}, flash ${f(t.ms.flash)})`);
  await benchAttention({ log: console.log, ort: peers.includes('ort') }); // rows in the --json schema
}
if (!args.includes('--no-train')) await benchTraining({ steps: quick ? 1 : 3, log: console.log });
console.log(`memory (ours, pool): live ${fmtBytes(memory.live)}, pooled ${fmtBytes(memory.pooled)}, peak ${fmtBytes(memory.peak)}`);
await closeGpu();
process.exit(0);
