// npm run bench [-- --quick] [-- --json FILE] [-- --peers=tfjs,ort,jax] [-- --rounds=N] [-- --no-train]
//               [-- --no-slice] [-- --slice-steps N] [-- --model DIR] [-- --model-steps N] [-- --variant=reg|tiled] [-- --only=matmul,ops,lm_head,attention,slice,model,train]
// Matmul GFLOP/s of ours (f32 and packed-bf16 weights) and of peers on the same WebGPU device in
// the same run (tf.js WebGPU, ONNX Runtime Web WebGPU EP, jax-js); attention, RMSNorm and
// log-softmax gather at Qwen2.5-VL-3B shapes; attention (naive vs flash vs ORT Web) and lm_head/decode rows (src/bench/attention.ts,
// src/bench/lmHead.ts); one SFT step of the 3B-width slice split by
// op kind with its overhead ratio; optionally one SFT step of a model folder (--model, e.g. the
// real 3B); training steps/s and tokens/s per method on the demo model; memory in use.
// --json FILE also writes every figure as { adapter, features, rows: [...] } (src/bench/report.ts).
import { nodeGpu, closeGpu } from '../gpu/node.ts';
import { matmulVariant, setMatmulVariant, tuneMatmul } from '../ops/matmul.ts';
import { benchMatmul, benchOps, type MatmulShape } from '../bench/matmul.ts';
import { fmtBytes, memory } from '../gpu/tensor.ts';
import { benchTraining } from '../bench/train.ts';
import { benchDecodeRows, benchLmHeadRows, benchStepRows } from '../bench/lmHead.ts';
import { benchAttention } from '../bench/attention.ts';
import { attentionVariant, tuneAttention } from '../ops/attention.ts';
import { Report } from '../bench/report.ts';
import { benchSftStep, sliceConfigJson, stepReport, syntheticSource, SLICE_INPUT } from '../bench/step.ts';
import { dirSource } from '../model/sources/node.ts';
import { runSelfTest } from '../gpu/selftest.ts';

const args = process.argv.slice(2);
/** --name=value or --name value */
const opt = (name: string): string | undefined => {
  const eq = args.find((a) => a.startsWith(`--${name}=`));
  if (eq) return eq.slice(name.length + 3);
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] && !args[i + 1].startsWith('--') ? args[i + 1] : undefined;
};
const quick = args.includes('--quick');
const peers = (opt('peers') ?? 'tfjs,ort,jax').split(',').filter(Boolean);
const variant = opt('variant');
const jsonFile = opt('json');
const modelDir = opt('model');
const only = opt('only')?.split(',');
const want = (part: string) => !only || only.includes(part);
if (args.includes('--json') && !jsonFile) {
  console.error('bench: --json needs a file name (--json out/bench.json)');
  process.exit(2);
}

const g = await nodeGpu();
console.log(`adapter: ${g.adapterName}`);
console.log(`limits: maxStorageBufferBindingSize ${fmtBytes(g.limits.maxStorageBufferBindingSize)}, maxBufferSize ${fmtBytes(g.limits.maxBufferSize)}, maxComputeWorkgroupStorageSize ${g.limits.maxComputeWorkgroupStorageSize}, features [${g.features.join(', ')}]`);
const report = new Report(g.adapterName, g.features, args);

if (variant === 'reg' || variant === 'tiled') {
  setMatmulVariant(variant);
  console.log(`matmul variant: ${variant} (forced by --variant)`);
} else {
  const t = await tuneMatmul();
  console.log(`matmul variant: ${matmulVariant()} (tuned on 256×512×512: reg ${t.ms.reg.toFixed(1)} ms, tiled ${t.ms.tiled.toFixed(1)} ms)`);
}
const st = await runSelfTest();
console.log(`feature variants: ${st.summary}`);
for (const line of st.lines) console.log(`  ${line}`);
report.note(`feature variants: ${st.summary}`);
report.data.variants = st.active;

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
const add = (r: Parameters<Report['add']>[0]) => report.add(r);

// The report is rewritten after every part, so a run cut short by a time limit keeps what it measured.
// A part that throws is reported and the next one still runs (the exit status says so).
const checkpoint = () => { if (jsonFile) report.write(jsonFile); };
let failures = 0;
async function part(name: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    const msg = (e as Error).stack?.split('\n').slice(0, 4).join(' | ') ?? String(e);
    console.log(`${name} FAILED: ${msg}`);
    report.note(`${name} failed: ${msg}`);
    failures++;
  }
  checkpoint();
}
if (want('matmul')) await part('matmul', () => benchMatmul(shapes, { peers, rounds, log: console.log, add }));
if (modelDir && want('model')) await part('model step', async () => {
  console.log('');
  console.log(`one LoRA SFT step of ${modelDir} (LoRA r 16 on the 7 text projections; one 112×112 image + 64 text tokens):`);
  const r = await benchSftStep({ source: await dirSource(modelDir), steps: Number(opt('model-steps') ?? 3), log: console.log });
  add(stepReport('model folder sft step', r, console.log));
});

if (want('slice') && !args.includes('--no-slice')) await part('slice step', async () => {
  console.log('');
  const spec = quick ? { ...SLICE_INPUT, text: 24, scored: 8 } : SLICE_INPUT;
  console.log(`one LoRA SFT step of the 3B-width slice (Qwen2.5-VL-3B widths, 2 decoder layers, 4 vision blocks incl. 1 full-attention; random BF16 weights; LoRA r 16 on the 7 text projections; one ${spec.gridH * 14}×${spec.gridW * 14} image + ${spec.text} text tokens):`);
  const steps = Number(opt('slice-steps') ?? (quick ? 0 : 2));
  const r = await benchSftStep({ source: syntheticSource(sliceConfigJson(2, 4)), spec, steps, log: console.log });
  add(stepReport('3B-width slice sft step', r, console.log));
});
if (want('ops') && !quick) await part('ops', () => benchOps({ log: console.log, add }));

// fused lm_head vs chunked, decode with the GPU sampler vs the CPU one (src/bench/lmHead.ts)
if (want('lm_head') && !args.includes('--no-lm-head')) await part('lm_head', async () => {
  console.log('\nlm_head + log-softmax (fused vs chunked) and decode (GPU vs CPU sampler), same run:');
  const lm = await benchLmHeadRows([{ T: 20, H: 128, V: 151936, what: 'demo model' }, ...(quick ? [] : [{ T: 64, H: 2048, V: 151936, what: '3B' }])], { reps: quick ? 1 : 2, log: console.log });
  const dec = await benchDecodeRows({ batch: 8, reps: quick ? 1 : 2, log: console.log });
  const steps = args.includes('--steps-lm-head') ? await benchStepRows({ log: console.log }) : [];
  for (const r of [...lm, ...dec, ...steps]) add(r);
});
// attention: naive vs flash vs ONNX Runtime Web's attention operator (src/bench/attention.ts)
if (want('attention') && !quick) await part('attention', async () => {
  const t = await tuneAttention();
  const f = (x: { fwd: number; bwd: number }) => `${x.fwd.toFixed(0)}/${x.bwd.toFixed(0)} ms`;
  console.log(`attention variant: forward ${attentionVariant().fwd}, backward ${attentionVariant().bwd} (tuned fwd/bwd: naive ${f(t.ms.naive)}, flash ${f(t.ms.flash)})`);
  for (const r of await benchAttention({ log: console.log, note: (t) => report.note(t), ort: peers.includes('ort'), reps: 4 })) add(r);
});

if (want('train') && !args.includes('--no-train')) await part('training', () => benchTraining({ steps: quick ? 1 : 3, log: console.log, add }));
console.log(`memory (ours, pool): live ${fmtBytes(memory.live)}, pooled ${fmtBytes(memory.pooled)}, peak ${fmtBytes(memory.peak)}`);
if (jsonFile) {
  report.write(jsonFile);
  console.log(`wrote ${report.data.rows.length} rows to ${jsonFile}`);
}
await closeGpu();
process.exit(failures ? 1 : 0);
