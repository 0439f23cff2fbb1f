// npm run train -- --model <hub id|folder|tiny> --data <file.jsonl|synthetic[:N]> --method sft|dpo|grpo
//                  [--config <json>] [--out <dir>] [--endpoint <url>] [--steps N] [--resume]
// Headless training on Node + Dawn with the same engine as the studio's Worker: one progress line
// per step, a PEFT adapter (adapter_model.safetensors + adapter_config.json) in --out.
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile, readdir, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { homedir } from 'node:os';
import { serialize, deserialize } from 'node:v8';
import { PNG } from 'pngjs';
import jpeg from 'jpeg-js';
import { nodeGpu, closeGpu } from '../gpu/node.ts';
import { Qwen2_5_VL } from '../model/qwen2_5_vl.ts';
import { tinySource } from '../model/tiny.ts';
import { hubSource } from '../model/sources/hub.ts';
import { dirCache, dirSource } from '../model/sources/node.ts';
import { targetRegex, type LoraConfig } from '../model/lora.ts';
import type { ModelSource } from '../model/sources/source.ts';
import { loadDefaultTokenizer, QwenTokenizer } from '../data/tokenizer.ts';
import type { RawImage } from '../data/image.ts';
import { syntheticGrounding, syntheticPreferences, syntheticRlPrompts } from '../data/synthetic.ts';
import { Trainer, TRAIN_DEFAULTS, TrainingFault, type Method, type TrainExample, type TrainOptions } from '../train/trainer.ts';
import { imagePaths, parseRecords, recordToExample } from '../train/examples.ts';
import type { KV } from '../train/checkpoint.ts';

function args(argv: string[]): Record<string, string | true> {
  const out: Record<string, string | true> = {};
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith('--')) continue;
    const key = argv[i].slice(2);
    out[key] = argv[i + 1] && !argv[i + 1].startsWith('--') ? argv[++i] : true;
  }
  return out;
}

const USAGE = 'usage: npm run train -- --model <hub id|folder|tiny> --data <file.jsonl|synthetic[:N]> --method sft|dpo|grpo [--config <json>] [--out <dir>] [--endpoint <url>] [--steps N] [--resume]';

/** Checkpoints as files: each value written to a temp file then renamed, so a crash never tears one. */
function dirKV(dir: string): KV {
  const path = (k: string) => join(dir, encodeURIComponent(k));
  return {
    async get<T>(k: string) {
      return existsSync(path(k)) ? (deserialize(await readFile(path(k))) as T) : undefined;
    },
    async set(k, v) {
      await mkdir(dir, { recursive: true });
      await writeFile(path(k) + '.tmp', serialize(v));
      await rename(path(k) + '.tmp', path(k));
    },
    async del(k) {
      if (existsSync(path(k))) await unlink(path(k));
    },
    async keys() {
      return existsSync(dir) ? (await readdir(dir)).filter((f) => !f.endsWith('.tmp')).map(decodeURIComponent) : [];
    },
  };
}

function decodeImage(bytes: Uint8Array, name: string): RawImage {
  try {
    if (bytes[0] === 0x89 && bytes[1] === 0x50) {
      const png = PNG.sync.read(Buffer.from(bytes));
      return { data: new Uint8Array(png.data), width: png.width, height: png.height, channels: 4 };
    }
    if (bytes[0] === 0xff && bytes[1] === 0xd8) {
      const j = jpeg.decode(bytes, { useTArray: true, maxMemoryUsageInMB: 2048 });
      return { data: j.data, width: j.width, height: j.height, channels: 4 };
    }
  } catch (e) {
    throw new Error(`${name}: cannot decode image (${(e as Error).message})`);
  }
  throw new Error(`${name}: not a PNG or JPEG image`);
}

async function loadExamples(data: string, method: Method): Promise<TrainExample[]> {
  const syn = /^synthetic(?::(\d+))?$/.exec(data);
  if (syn) {
    const count = Number(syn[1] ?? 8);
    if (method === 'sft') return syntheticGrounding({ count, seed: 1 }).map((r) => ({ kind: 'sft', images: [r.image], messages: r.messages }));
    if (method === 'dpo') return syntheticPreferences({ count, seed: 1 }).map((r) => ({ kind: 'dpo', images: [r.image], prompt: r.prompt, chosen: r.chosen, rejected: r.rejected }));
    return syntheticRlPrompts({ count, seed: 1 }).map((r) => ({ kind: 'rl', images: [r.image], prompt: r.prompt, reference: r.reference }));
  }
  const file = resolve(data);
  const { records, errors } = parseRecords(await readFile(file, 'utf8'));
  const out: TrainExample[] = [];
  for (const { line, record } of records) {
    try {
      const images = await Promise.all(imagePaths(record).map(async (p) => decodeImage(await readFile(resolve(dirname(file), p)), p)));
      out.push(recordToExample(record, images, method, line));
    } catch (e) {
      errors.push(e as never);
    }
  }
  for (const e of errors) console.error(`skipped ${data} ${(e as Error).message}`);
  if (!out.length) throw new Error(`${data}: no usable records (${errors.length} skipped)`);
  return out;
}

async function modelSource(spec: string, endpoint?: string): Promise<{ source: ModelSource; tokenizer: QwenTokenizer }> {
  if (spec === 'tiny') return { source: tinySource(), tokenizer: await loadDefaultTokenizer() };
  const source = existsSync(spec)
    ? await dirSource(resolve(spec))
    : hubSource(spec, { endpoint, cache: dirCache(join(homedir(), '.cache', 'patchwork', 'hub')) });
  const files = await source.list();
  if (!files.includes('tokenizer.json')) return { source, tokenizer: await loadDefaultTokenizer() };
  const tokJson = new TextDecoder().decode(await source.read('tokenizer.json'));
  const tokCfg = files.includes('tokenizer_config.json') ? JSON.parse(new TextDecoder().decode(await source.read('tokenizer_config.json'))) : {};
  return { source, tokenizer: QwenTokenizer.fromJSON(tokJson, tokCfg) };
}

async function main(): Promise<number> {
  const a = args(process.argv.slice(2));
  if (a.help || !a.model || !a.data) {
    console.log(USAGE);
    return a.help ? 0 : 2;
  }
  const method = (a.method ?? 'sft') as Method;
  if (!['sft', 'dpo', 'grpo'].includes(method)) throw new Error(`--method ${method}: expected sft, dpo or grpo (PPO runs in the studio only for now)`);
  const user = typeof a.config === 'string' ? JSON.parse(await readFile(a.config, 'utf8')) : {};
  const cfg: TrainOptions = {
    ...TRAIN_DEFAULTS, ...user, method,
    optim: { ...TRAIN_DEFAULTS.optim, ...user.optim, ...(typeof a.steps === 'string' ? { maxSteps: Number(a.steps) } : {}) },
    data: { ...TRAIN_DEFAULTS.data, ...user.data }, dpo: { ...TRAIN_DEFAULTS.dpo, ...user.dpo }, grpo: { ...TRAIN_DEFAULTS.grpo, ...user.grpo },
  };
  const lora: LoraConfig = { r: 16, loraAlpha: 32, loraDropout: 0, useRslora: false, targetModules: targetRegex(), ...user.lora };
  const out = resolve(typeof a.out === 'string' ? a.out : 'out/adapter');

  const g = await nodeGpu();
  console.log(`adapter: ${g.adapterName}`);
  const { source, tokenizer } = await modelSource(String(a.model), typeof a.endpoint === 'string' ? a.endpoint : undefined);
  const model = await Qwen2_5_VL.load(source, { lora, loraSeed: cfg.optim.seed, recompute: !!a.recompute });
  const examples = await loadExamples(String(a.data), method);
  const trainer = new Trainer(model, tokenizer, examples, cfg, typeof a.run === 'string' ? a.run : 'cli');
  const kv = dirKV(join(out, 'checkpoints'));
  if (a.resume && (await trainer.resume(kv))) console.log(`resumed at step ${trainer.step}`);
  console.log(`${method} on ${examples.length} examples, ${trainer.totalSteps} steps`);
  try {
    while (!trainer.done) {
      const m = await trainer.trainStep();
      const extra = Object.entries(m).filter(([k]) => k.includes('/') || k === 'mean_token_accuracy' || k === 'reward').map(([k, v]) => `${k} ${v.toFixed(4)}`).join('  ');
      console.log(`step ${m.step}/${trainer.totalSteps}  epoch ${m.epoch.toFixed(2)}  loss ${m.loss.toFixed(4)}  lr ${m.learning_rate.toExponential(2)}  grad_norm ${m.grad_norm.toFixed(3)}  tok/s ${m.tokens_per_s.toFixed(0)}  ${extra}`);
      if (cfg.checkpointEvery && m.step % cfg.checkpointEvery === 0) await trainer.save(kv);
    }
  } catch (e) {
    if (e instanceof TrainingFault) {
      console.error(e.message);
      return 1;
    }
    throw e;
  }
  await trainer.save(kv);
  const adapter = await model.exportAdapter();
  await mkdir(out, { recursive: true });
  await writeFile(join(out, 'adapter_model.safetensors'), adapter.safetensors);
  await writeFile(join(out, 'adapter_config.json'), JSON.stringify(adapter.config, null, 2));
  console.log(`wrote ${join(out, 'adapter_model.safetensors')} and adapter_config.json`);
  return 0;
}

main()
  .then(async (code) => {
    await closeGpu();
    process.exit(code);
  })
  .catch(async (e) => {
    console.error(e instanceof Error ? e.message : e);
    await closeGpu();
    process.exit(1);
  });
