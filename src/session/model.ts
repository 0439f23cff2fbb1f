// Model spec → source → config.json → tokenizer → model, with progress events: the one way both
// front ends load a base model. The front end supplies what only it can reach (a Node folder, an
// on-disk hub cache); everything else (which files, which checks, what the adapter is called) is here.
import { gpu } from '../gpu/device.ts';
import { Qwen2_5_VL, readModelConfig, type LoadOptions } from '../model/qwen2_5_vl.ts';
export { readModelConfig };
import { tinySource } from '../model/tiny.ts';
import { hubSource } from '../model/sources/hub.ts';
import { localSource } from '../model/sources/local.ts';
import type { ByteCache } from '../model/sources/cache.ts';
import type { ModelSource } from '../model/sources/source.ts';
import type { QwenVLConfig } from '../model/config.ts';
import { targetRegex, targetRegexFromNames, type LoraConfig } from '../model/lora.ts';
import { fullPrecisionBaseId } from '../model/quant.ts';
import { loadDefaultTokenizer, type QwenTokenizer } from '../data/tokenizer.ts';
import { loadTokenizer } from '../model/weights.ts';
import type { TrainConfig } from '../config/config.ts';

/** Where the base model comes from. A local folder's Files only live as long as the page: after a reload the page passes them again. */
export type ModelSpec =
  | { source: 'tiny' }
  | { source: 'hub'; repo: string; endpoint?: string; revision?: string }
  | { source: 'local'; name?: string; files?: File[] }
  /** a folder on disk (the CLI); read through ModelHost.folder */
  | { source: 'folder'; path: string };

/** The studio's LoRA settings (TrainConfig['lora']): peft names in camelCase, decoder module names. */
export type LoraSettings = TrainConfig['lora'];

export interface LoadProgress {
  phase: 'config' | 'tokenizer' | 'weights' | 'data';
  loaded: number;
  total: number;
  /** what is being read (a tensor or file name) */
  label?: string;
}

/** What only the front end can reach. */
export interface ModelHost {
  /** a folder on disk as a source (Node: model/sources/node.ts dirSource) */
  folder?(path: string): Promise<ModelSource>;
  /** where hub downloads are kept (browser: the Cache API; CLI: a folder) */
  hubCache?: ByteCache;
  /** the built-in tokenizer (the tiny model's) */
  defaultTokenizer?(): Promise<QwenTokenizer>;
}

/** The model a TrainConfig names (the studio's Train panel). */
export function specOf(c: TrainConfig, files?: File[]): ModelSpec {
  if (c.model.source === 'hub') return { source: 'hub', repo: c.model.hubId.trim(), endpoint: c.model.endpoint, revision: c.model.revision };
  if (c.model.source === 'local') return { source: 'local', name: c.model.local?.name, files };
  return { source: 'tiny' };
}

/** Same key = same weights. */
export function specKey(s: ModelSpec): string {
  if (s.source === 'hub') return `hub:${s.endpoint ?? ''}:${s.repo}@${s.revision ?? 'main'}`;
  if (s.source === 'local') return `local:${s.name ?? ''}:${(s.files ?? []).map((f) => `${f.name}/${f.size}`).sort().join(',')}`;
  if (s.source === 'folder') return `folder:${s.path}`;
  return 'tiny';
}

export function specName(s: ModelSpec): string {
  return s.source === 'hub' ? s.repo : s.source === 'local' ? (s.name ?? 'local folder') : s.source === 'folder' ? s.path : 'tiny';
}

/** peft's base_model_name_or_path for adapter_config.json (the CLI and the studio write the same). */
export function baseModelId(s: ModelSpec): string {
  // a pre-quantised bitsandbytes repo ("…-bnb-4bit") names its full-precision original: peft loads the adapter there
  if (s.source === 'hub') return fullPrecisionBaseId(s.repo);
  if (s.source === 'local') return s.name ?? 'local-model';
  if (s.source === 'folder') return s.path.replace(/[\\/]+$/, '');
  return 'patchwork-builtin-tiny';
}

/** The spec without File objects (what a run's saved settings keep). */
export function storableSpec(s: ModelSpec): ModelSpec {
  return s.source === 'local' ? { source: 'local', name: s.name } : s;
}

export async function sourceOf(s: ModelSpec, host: ModelHost = {}): Promise<ModelSource> {
  if (s.source === 'hub') return hubSource(s.repo, { endpoint: s.endpoint, revision: s.revision, ...(host.hubCache ? { cache: host.hubCache } : {}) });
  if (s.source === 'local') {
    if (!s.files?.length) throw new Error(`The local model folder${s.name ? ` "${s.name}"` : ''} has to be chosen again (a browser cannot reopen a folder by itself after a reload).`);
    return localSource(s.files, `local folder ${s.name ?? ''}`.trim());
  }
  if (s.source === 'folder') {
    if (!host.folder) throw new Error(`A model folder on disk (${s.path}) can only be read by the CLI.`);
    return host.folder(s.path);
  }
  return tinySource();
}

/** The studio's LoRA settings → peft's LoraConfig (decoder modules as one full-match regex). */
export function loraConfigOf(l: LoraSettings, baseModel: string | null = null): LoraConfig {
  return {
    r: l.r, loraAlpha: l.alpha, loraDropout: l.dropout, useRslora: l.useRslora,
    targetModules: l.targetModules.length ? targetRegexFromNames(l.targetModules) : targetRegex(), baseModelNameOrPath: baseModel,
  };
}

/** The quantisation settings of a config, as Qwen2_5_VL.load takes them. */
export function quantizeOptions(c: TrainConfig): Pick<LoadOptions, 'quantize' | 'quantizeVision'> {
  return c.model.quantize === 'nf4' ? { quantize: 'nf4', quantizeVision: c.model.quantizeVision } : {};
}

/**
 * The tokenizer of a source, cross-checked with its config.json (model/weights.ts loadTokenizer: a
 * missing tokenizer.json is an error, special ids and vocabulary must match). The built-in tiny
 * model uses the built-in Qwen tokenizer.
 */
export async function readTokenizer(spec: ModelSpec, source: ModelSource, host: ModelHost = {}, config?: QwenVLConfig): Promise<QwenTokenizer> {
  if (spec.source === 'tiny') return (host.defaultTokenizer ?? loadDefaultTokenizer)();
  return loadTokenizer(source, config ?? (await readModelConfig(source)));
}

export interface LoadedModel {
  model: Qwen2_5_VL;
  tokenizer: QwenTokenizer;
  config: QwenVLConfig;
  sourceId: string;
  loadMs: number;
}

export interface LoadModelOptions extends Pick<LoadOptions, 'plan' | 'recompute' | 'quantize' | 'quantizeVision' | 'budgetBytes'> {
  /** a fresh adapter (undefined: none) */
  lora?: LoraConfig;
  loraSeed?: number;
  onProgress?(p: LoadProgress): void;
  /** an already read config / tokenizer of this spec (a cache of the front end; a function is called after the memory check) */
  config?: QwenVLConfig;
  tokenizer?: QwenTokenizer | (() => Promise<QwenTokenizer>);
}

/** spec → source → config.json → tokenizer → weights on the GPU. On failure nothing stays on the GPU. */
export async function loadModel(spec: ModelSpec, host: ModelHost, o: LoadModelOptions = {}): Promise<LoadedModel> {
  const t0 = performance.now();
  const source = await sourceOf(spec, host);
  o.onProgress?.({ phase: 'config', loaded: 0, total: 1, label: 'config.json' });
  const config = o.config ?? (await readModelConfig(source));
  // refuse, with the numbers, a model that will not fit, before reading anything else
  Qwen2_5_VL.checkMemory(config, gpu().limits, { lora: o.lora, plan: o.plan, recompute: o.recompute, budgetBytes: o.budgetBytes });
  o.onProgress?.({ phase: 'tokenizer', loaded: 0, total: 1, label: 'tokenizer.json' });
  const tokenizer = typeof o.tokenizer === 'function' ? await o.tokenizer() : (o.tokenizer ?? (await readTokenizer(spec, source, host, config)));
  const model = await Qwen2_5_VL.load(source, {
    lora: o.lora, loraSeed: o.loraSeed ?? 0, plan: o.plan, recompute: o.recompute, budgetBytes: o.budgetBytes,
    ...(o.quantize ? { quantize: o.quantize, quantizeVision: o.quantizeVision } : {}),
    onProgress: (p) => o.onProgress?.({ phase: 'weights', loaded: p.bytes, total: p.total, label: p.tensor }),
  });
  return { model, tokenizer, config, sourceId: source.id, loadMs: performance.now() - t0 };
}
