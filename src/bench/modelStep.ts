// Forward + backward time of one LoRA training step of the GPU model, with and without per-layer
// recomputation. Default: the built-in tiny model (Qwen vocabulary 151936, tied lm_head), LoRA
// r 16 on every text projection, one 112×112 image (16 image tokens) + 40 text tokens, the last
// 20 tokens scored.
//   npx tsx --import ./scripts/raw-loader.mjs src/bench/modelStep.ts [golden-model-dir] [--steps N]
import { nodeGpu, closeGpu } from '../gpu/node.ts';
import { gpu } from '../gpu/device.ts';
import { flush } from '../gpu/kernel.ts';
import { memory } from '../gpu/tensor.ts';
import { Qwen2_5_VL, type SeqInput } from '../model/qwen2_5_vl.ts';
import { dirSource } from '../model/sources/node.ts';
import { tinySource } from '../model/tiny.ts';
import { targetRegex } from '../model/lora.ts';
import { Rng } from '../base/rng.ts';

const args = process.argv.slice(2);
const dir = args.find((a) => !a.startsWith('--') && !/^\d+$/.test(a));
const steps = Number(args[args.indexOf('--steps') + 1]) || 3;

const g = await nodeGpu();
const src = dir ? await dirSource(dir) : tinySource();
const model = await Qwen2_5_VL.load(src, { lora: { r: 16, loraAlpha: 32, loraDropout: 0, targetModules: targetRegex(), useRslora: false } });
const cfg = model.config, rng = new Rng(1);
const grid = [1, 8, 8], M = (grid[1] * grid[2]) / cfg.vision.spatialMergeSize ** 2;
const text = 40, L = text + M;
const ids = new Int32Array(L);
for (let i = 0; i < L; i++) ids[i] = Math.floor(rng.next() * Math.min(1000, cfg.imageTokenId));
ids[4] = cfg.visionStartTokenId;
ids.fill(cfg.imageTokenId, 5, 5 + M);
ids[5 + M] = cfg.visionEndTokenId;
const K = 3 * cfg.vision.temporalPatchSize * cfg.vision.patchSize ** 2;
const seq: SeqInput = { inputIds: ids, images: { pixelValues: Float32Array.from({ length: grid[1] * grid[2] * K }, () => rng.uniform(-1, 1)), imageGridThw: Int32Array.from(grid) }, scoreStart: L - 20 };
const dl = new Float32Array(20).fill(-1 / 20);

const wait = async () => {
  flush();
  await g.device.queue.onSubmittedWorkDone();
};
let t0 = performance.now();
await model.logps(seq, { lora: true, train: false });
console.log(`adapter: ${gpu().adapterName}`);
console.log(`model: ${src.id}, ${cfg.text.numHiddenLayers} layers, H ${cfg.text.hiddenSize}, vocab ${cfg.text.vocabSize}; sequence ${L} tokens (${M} image), 20 scored`);
console.log(`first forward (vision tower + pipeline compiles): ${(performance.now() - t0).toFixed(0)} ms`);
for (const recompute of [false, true]) {
  model.recompute = recompute;
  await model.logps(seq, { lora: true, train: true }); // warm-up
  model.backward(dl);
  await wait();
  const fwd: number[] = [], bwd: number[] = [];
  let peak = 0;
  for (let s = 0; s < steps; s++) {
    t0 = performance.now();
    await model.logps(seq, { lora: true, train: true });
    peak = Math.max(peak, memory.live);
    const t1 = performance.now();
    model.backward(dl);
    await wait();
    fwd.push(t1 - t0);
    bwd.push(performance.now() - t1);
  }
  const med = (a: number[]) => a.slice().sort((x, y) => x - y)[Math.floor(a.length / 2)];
  console.log(`recompute ${recompute ? 'on ' : 'off'}: forward ${med(fwd).toFixed(0)} ms + backward ${med(bwd).toFixed(0)} ms = ${(med(fwd) + med(bwd)).toFixed(0)} ms per step (median of ${steps}); live GPU bytes after the train forward ${(peak / 2 ** 20).toFixed(1)} MiB`);
}
model.dispose();
await closeGpu();
