// The honesty check of the NF4 memory estimate (not run by CI): a Qwen2.5-VL-3B-shaped model with
// random BF16 weights, served by a virtual source in the exact hub layout (two shards, nothing on
// disk: each byte range is generated when read), loaded with quantize: 'nf4' (quantised tensor by
// tensor while streaming), then ONE SFT step (train forward + backward + AdamW) on one 448×448
// image + 64 text tokens, LoRA r 16 on the 7 text projections, recomputation on. Prints the GPU
// buffer pool's peak during the step next to src/model/memory.ts's estimate for the same request.
//
//   npx tsx --import ./scripts/raw-loader.mjs scripts/nf4_memory.ts [--layers N] [--vision-depth N]
//     [--image S] (square side in pixels, default 448) [--text N] (default 64) [--no-recompute] [--bf16]
// Full 3B at 112×112 (`--image 112`) took 4505 s on a loaded SwiftShader (×1.025); `--layers 1
// --vision-depth 1 --image 112 --text 32` measures the same widths in minutes.
import { nodeGpu } from '../src/gpu/node.ts';
import { flush } from '../src/gpu/kernel.ts';
import { memory, trimPool } from '../src/gpu/tensor.ts';
import { parseConfig, QWEN2_5_VL_3B_CONFIG_JSON } from '../src/model/config.ts';
import { defaultLoraConfig } from '../src/model/lora.ts';
import { estimateMemory, formatEstimate, gib } from '../src/model/memory.ts';
import { Qwen2_5_VL } from '../src/model/qwen2_5_vl.ts';
import { expectedWeights } from '../src/model/weights.ts';
import { MissingFileError, type ModelSource } from '../src/model/sources/source.ts';
import { AdamW, ADAMW_DEFAULTS } from '../src/train/optimizer.ts';

const args = process.argv.slice(2);
const opt = (f: string, d: number) => (args.includes(f) ? Number(args[args.indexOf(f) + 1]) : d);
const layers = opt('--layers', 36), depth = opt('--vision-depth', 32), side = opt('--image', 448), text = opt('--text', 64);
const recompute = !args.includes('--no-recompute');
const quantize = args.includes('--bf16') ? undefined : ('nf4' as const);

const json = JSON.parse(JSON.stringify(QWEN2_5_VL_3B_CONFIG_JSON));
json.num_hidden_layers = layers;
json.vision_config.depth = depth;
json.vision_config.fullatt_block_indexes = (json.vision_config.fullatt_block_indexes as number[]).filter((i) => i < depth);
if (!json.vision_config.fullatt_block_indexes.length) json.vision_config.fullatt_block_indexes = [depth - 1];
const cfg = parseConfig(json);

/** A virtual hub folder: config.json, two shards and their index; tensor bytes generated on read. */
function randomSource(): ModelSource {
  const names = [...expectedWeights(cfg)].sort(([a], [b]) => (a < b ? -1 : 1));
  const half = Math.ceil(names.length / 2);
  const shards = [names.slice(0, half), names.slice(half)].map((list, i) => {
    let off = 0;
    const header: Record<string, unknown> = {};
    const spans: { name: string; begin: number; end: number; bias: boolean }[] = [];
    for (const [name, shape] of list) {
      const bytes = shape.reduce((a, b) => a * b, 1) * 2;
      header[name] = { dtype: 'BF16', shape, data_offsets: [off, off + bytes] };
      spans.push({ name, begin: off, end: off + bytes, bias: name.endsWith('.bias') });
      off += bytes;
    }
    let h = new TextEncoder().encode(JSON.stringify(header));
    const pad = (8 - (h.length % 8)) % 8;
    h = new TextEncoder().encode(JSON.stringify(header) + ' '.repeat(pad));
    const prefix = new Uint8Array(8 + h.length);
    new DataView(prefix.buffer).setBigUint64(0, BigInt(h.length), true);
    prefix.set(h, 8);
    return { file: `model-0000${i + 1}-of-00002.safetensors`, prefix, spans, size: prefix.length + off };
  });
  const index = new TextEncoder().encode(JSON.stringify({ metadata: {}, weight_map: Object.fromEntries(shards.flatMap((s) => s.spans.map((sp) => [sp.name, s.file]))) }));
  const config = new TextEncoder().encode(JSON.stringify(json));
  const small: Record<string, Uint8Array> = { 'config.json': config, 'model.safetensors.index.json': index };
  const find = (file: string) => shards.find((s) => s.file === file);
  // bf16 values ~ ±0.02 (norm weights 1.0): a cheap hash of the byte offset, deterministic
  const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
  const gen = (s: (typeof shards)[number], begin: number, end: number): Uint8Array => {
    const out = new Uint8Array(end - begin);
    for (let p = begin; p < Math.min(end, s.prefix.length); p++) out[p - begin] = s.prefix[p];
    const d0 = Math.max(begin, s.prefix.length) - s.prefix.length, d1 = end - s.prefix.length;
    for (const sp of s.spans) {
      if (sp.end <= d0 || sp.begin >= d1) continue;
      const norm = /norm|ln_q/.test(sp.name);
      const lo = Math.max(d0, sp.begin), hi = Math.min(d1, sp.end);
      for (let d = lo; d < hi; d++) {
        const e = (d - sp.begin) >> 1;
        let bits = 0x3f80; // norm weights 1.0
        if (!norm) {
          const u = Math.imul(e ^ 0x9e3779b9, 0x85ebca6b) >>> 0;
          f32[0] = ((u >>> 8) / 2 ** 24 - 0.5) * 0.04;
          bits = u32[0] >>> 16;
        }
        out[d + s.prefix.length - begin] = (d - sp.begin) & 1 ? bits >>> 8 : bits & 0xff;
      }
    }
    return out;
  };
  return {
    id: `random 3B-shaped (${layers} layers, vision depth ${depth})`,
    list: async () => [...Object.keys(small), ...shards.map((s) => s.file)],
    size: async (f) => small[f]?.length ?? find(f)?.size ?? Promise.reject(new MissingFileError('random', f)),
    read: async (f) => {
      if (small[f]) return small[f];
      const s = find(f);
      if (!s) throw new MissingFileError('random', f);
      return gen(s, 0, s.size);
    },
    readRange: async (f, b, e) => {
      if (small[f]) return small[f].subarray(b, e);
      const s = find(f);
      if (!s) throw new MissingFileError('random', f);
      return gen(s, b, e);
    },
  };
}

const g = await nodeGpu();
const lora = defaultLoraConfig({ r: 16, loraAlpha: 32, loraDropout: 0 });
const t0 = performance.now();
const model = await Qwen2_5_VL.load(randomSource(), { quantize, lora, recompute, budgetBytes: 64 * 2 ** 30 });
console.log(`loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s; weights on the GPU ${gib(memory.live)}`);

// one side×side image (448: 32×32 patches → 256 image tokens) + `text` text tokens
const gp = side / 14;
if (!Number.isInteger(gp / 2)) throw new Error(`--image ${side} must be a multiple of 28`);
const grid = [1, gp, gp], M = (grid[1] * grid[2]) / 4, L = text + M;
const ids = new Int32Array(L);
for (let i = 0; i < L; i++) ids[i] = 100 + ((i * 7919) % 5000);
ids[4] = cfg.visionStartTokenId;
ids.fill(cfg.imageTokenId, 5, 5 + M);
ids[5 + M] = cfg.visionEndTokenId;
const K = 3 * cfg.vision.temporalPatchSize * cfg.vision.patchSize ** 2;
const pixelValues = Float32Array.from({ length: grid[1] * grid[2] * K }, (_, i) => Math.sin(i) * 0.5);
const scored = Math.min(20, text - 8);

const opt2 = new AdamW(model.loraParams(), ADAMW_DEFAULTS);
flush();
await g.device.queue.onSubmittedWorkDone();
trimPool();
memory.peak = memory.live + memory.pooled;
const before = memory.peak;
const t1 = performance.now();
const r = await model.logps({ inputIds: ids, images: { pixelValues, imageGridThw: Int32Array.from(grid) }, scoreStart: L - scored }, { lora: true, train: true });
model.backward(Float32Array.from(r.logps, () => -1 / scored));
opt2.step(ADAMW_DEFAULTS.lr);
flush();
await g.device.queue.onSubmittedWorkDone();
const secs = (performance.now() - t1) / 1000;

const est = estimateMemory({ config: cfg, lora, images: [{ height: side, width: side }], resized: true, textTokens: text, recompute, quantize });
console.log(formatEstimate(est));
console.log(`request: ${layers} decoder layers, vision depth ${depth}, one ${side}×${side} image (${M} tokens) + ${text} text tokens, recompute ${recompute}, ${quantize ?? 'bf16'}`);
console.log(`SFT step ${secs.toFixed(0)} s; loss ${(-r.logps.reduce((a, b) => a + b, 0) / scored).toFixed(3)}`);
console.log(`pool before the step ${gib(before)}; pool peak during the step ${gib(memory.peak)}; estimate ${gib(est.totalBytes)}; peak / estimate = ${(memory.peak / est.totalBytes).toFixed(3)}`);
model.dispose();
process.exit(0);
