// LoRA adapters as peft makes them: config (r, alpha, dropout, targets, rsLoRA), init (A
// kaiming-uniform with a=√5, i.e. U(±1/√in); B zeros), and adapter_model.safetensors +
// adapter_config.json in peft's format so an adapter trained here loads in peft unchanged and back.
//
// Module names: canonical names are the hub layout ('model.layers.0.self_attn.q_proj',
// 'visual.blocks.0.attn.qkv'). peft keys add 'base_model.model.' and the layout of the transformers
// version that trained them: ≥ 4.52 'model.language_model.layers…' / 'model.visual…' (written by
// default), older 'model.layers…' / 'visual…' (option). Both are read.
import type { QwenVLConfig } from './config.ts';
import { bytesToF32, readSafetensors, writeSafetensors, type StWriteTensor } from './safetensors.ts';
import { rngFor } from '../base/rng.ts';
import { MissingFileError, type ModelSource } from './sources/source.ts';
import { canonicalName, layoutName, type TensorLayout } from './weights.ts';

export interface LoraConfig {
  r: number;
  loraAlpha: number;
  loraDropout: number;
  /** a list (suffix match, as peft) or one regular expression (full match, as peft) */
  targetModules: string[] | string;
  excludeModules?: string[] | string | null;
  useRslora: boolean;
  /** per-module r / alpha overrides; keys are peft patterns matched at the end of module names */
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  layersToTransform?: number[] | null;
  baseModelNameOrPath?: string | null;
  revision?: string | null;
}

export class LoraError extends Error {
  constructor(where: string, what: string) {
    super(`${where}: ${what}`);
    this.name = 'LoraError';
  }
}

export const TEXT_LORA_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export const VISION_LORA_MODULES = ['attn.qkv', 'attn.proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj', 'merger.mlp.0', 'merger.mlp.2'] as const;

/**
 * A target regex (peft full-match) for the given text and vision modules. Text modules only match
 * decoder layers (`layers.N`), so the vision MLP's own gate/up/down_proj are not caught by accident.
 */
export function targetRegex(text: readonly string[] = TEXT_LORA_MODULES, vision: readonly string[] = []): string {
  const parts: string[] = [];
  const attn = text.filter((m) => ['q_proj', 'k_proj', 'v_proj', 'o_proj'].includes(m));
  const mlp = text.filter((m) => ['gate_proj', 'up_proj', 'down_proj'].includes(m));
  const t: string[] = [];
  if (attn.length) t.push(`self_attn\\.(${attn.join('|')})`);
  if (mlp.length) t.push(`mlp\\.(${mlp.join('|')})`);
  if (t.length) parts.push(`.*\\.layers\\.\\d+\\.(${t.join('|')})`);
  const blk = vision.filter((m) => !m.startsWith('merger.')).map((m) => m.replace(/\./g, '\\.'));
  const mer = vision.filter((m) => m.startsWith('merger.')).map((m) => m.slice('merger.'.length).replace(/\./g, '\\.'));
  if (blk.length) parts.push(`(.*\\.)?visual\\.blocks\\.\\d+\\.(${blk.join('|')})`);
  if (mer.length) parts.push(`(.*\\.)?visual\\.merger\\.(${mer.join('|')})`);
  if (!parts.length) throw new Error('targetRegex: no modules');
  return parts.length === 1 ? parts[0] : parts.map((p) => `(${p})`).join('|');
}

/**
 * The target regex for a list of module names as the UI and configs spell them: decoder names
 * (q_proj … down_proj) and vision names (attn.qkv, merger.mlp.0, optionally prefixed visual.).
 */
export function targetRegexFromNames(names: readonly string[], where = 'LoRA'): string {
  const text: string[] = [], vision: string[] = [];
  for (const raw of names) {
    const m = raw.trim();
    const v = m.replace(/^(model\.)?visual\./, '');
    if ((TEXT_LORA_MODULES as readonly string[]).includes(m)) text.push(m);
    else if ((VISION_LORA_MODULES as readonly string[]).includes(v)) vision.push(v);
    else throw new Error(`${where}: unknown LoRA target module "${raw}" (decoder: ${TEXT_LORA_MODULES.join(', ')}; vision: ${VISION_LORA_MODULES.join(', ')})`);
  }
  if (!text.length && !vision.length) throw new Error(`${where}: choose at least one LoRA target module`);
  return targetRegex([...new Set(text)], [...new Set(vision)]);
}

/** The studio's default: r 16, alpha 32, dropout 0.05, all text projections. */
export function defaultLoraConfig(over: Partial<LoraConfig> = {}): LoraConfig {
  return { r: 16, loraAlpha: 32, loraDropout: 0.05, targetModules: targetRegex(), useRslora: false, ...over };
}

// ---------------------------------------------------------------- modules and matching

export interface LinearModule {
  /** canonical (hub layout) module name */
  name: string;
  inFeatures: number;
  outFeatures: number;
  tower: 'text' | 'vision';
  /** layer or block index (-1 for the merger) */
  layer: number;
}

/** Every nn.Linear of the model that LoRA can adapt, in model order. */
export function linearModules(cfg: QwenVLConfig): LinearModule[] {
  const t = cfg.text, v = cfg.vision;
  const H = t.hiddenSize, q = t.numAttentionHeads * t.headDim, kv = t.numKeyValueHeads * t.headDim, I = t.intermediateSize;
  const C = v.hiddenSize, Iv = v.intermediateSize, Cm = C * v.spatialMergeSize ** 2;
  const out: LinearModule[] = [];
  for (let i = 0; i < v.depth; i++) {
    const p = `visual.blocks.${i}.`;
    const add = (n: string, inF: number, outF: number) => out.push({ name: p + n, inFeatures: inF, outFeatures: outF, tower: 'vision', layer: i });
    add('attn.qkv', C, 3 * C);
    add('attn.proj', C, C);
    add('mlp.gate_proj', C, Iv);
    add('mlp.up_proj', C, Iv);
    add('mlp.down_proj', Iv, C);
  }
  out.push({ name: 'visual.merger.mlp.0', inFeatures: Cm, outFeatures: Cm, tower: 'vision', layer: -1 });
  out.push({ name: 'visual.merger.mlp.2', inFeatures: Cm, outFeatures: v.outHiddenSize, tower: 'vision', layer: -1 });
  for (let i = 0; i < t.numHiddenLayers; i++) {
    const p = `model.layers.${i}.`;
    const add = (n: string, inF: number, outF: number) => out.push({ name: p + n, inFeatures: inF, outFeatures: outF, tower: 'text', layer: i });
    add('self_attn.q_proj', H, q);
    add('self_attn.k_proj', H, kv);
    add('self_attn.v_proj', H, kv);
    add('self_attn.o_proj', q, H);
    add('mlp.gate_proj', H, I);
    add('mlp.up_proj', H, I);
    add('mlp.down_proj', I, H);
  }
  return out;
}

const fullMatch = (pattern: string, key: string) => new RegExp(`^(?:${pattern})$`).test(key);

/** peft's check_target_module_exists for one spelling of a module name. */
function peftMatches(spec: string[] | string, key: string): boolean {
  if (typeof spec === 'string') return fullMatch(spec, key);
  return spec.some((t) => key === t || key.endsWith(`.${t}`));
}

/** peft's layer index for layers_to_transform (layers_pattern unset): the number after the second-last dot group. */
function peftLayerIndex(key: string): number | undefined {
  const m = /.*\.[^.]*\.(\d+)\./.exec(key);
  return m ? Number(m[1]) : undefined;
}

/** peft's get_pattern_key: the first pattern that matches at the end of the module name. */
function patternValue(patterns: Record<string, number> | undefined, key: string): number | undefined {
  if (!patterns) return undefined;
  for (const [p, v] of Object.entries(patterns)) if (new RegExp(`(.*\\.)?(${p})$`).test(key)) return v;
  return undefined;
}

/** Whether peft would adapt this module. A module matches when either layout's spelling matches. */
export function isTargeted(cfg: LoraConfig, moduleName: string): boolean {
  const spellings = [layoutName(moduleName, 'hub'), layoutName(moduleName, 'transformers')];
  const hit = spellings.some((k) => {
    if (!peftMatches(cfg.targetModules, k)) return false;
    if (cfg.excludeModules && peftMatches(cfg.excludeModules, k)) return false;
    if (cfg.layersToTransform && cfg.layersToTransform.length) {
      const li = peftLayerIndex(k);
      if (li === undefined || !cfg.layersToTransform.includes(li)) return false;
    }
    return true;
  });
  return hit;
}

export interface LoraModuleSpec extends LinearModule {
  r: number;
  alpha: number;
  /** alpha / r, or alpha / √r with rsLoRA */
  scaling: number;
}

export function moduleSpec(cfg: LoraConfig, m: LinearModule): LoraModuleSpec {
  const keys = [layoutName(m.name, 'hub'), layoutName(m.name, 'transformers')];
  const r = keys.map((k) => patternValue(cfg.rankPattern, k)).find((x) => x !== undefined) ?? cfg.r;
  const alpha = keys.map((k) => patternValue(cfg.alphaPattern, k)).find((x) => x !== undefined) ?? cfg.loraAlpha;
  return { ...m, r, alpha, scaling: cfg.useRslora ? alpha / Math.sqrt(r) : alpha / r };
}

/** The modules an adapter with this config adapts, in model order. */
export function targetedModules(model: QwenVLConfig, cfg: LoraConfig): LoraModuleSpec[] {
  const mods = linearModules(model).filter((m) => isTargeted(cfg, m.name)).map((m) => moduleSpec(cfg, m));
  if (!mods.length) throw new LoraError('LoRA config', `target_modules ${JSON.stringify(cfg.targetModules)} matches no linear module of this model`);
  return mods;
}

// ---------------------------------------------------------------- adapter

export interface LoraModule extends LoraModuleSpec {
  /** [r, in] */
  A: Float32Array;
  /** [out, r] */
  B: Float32Array;
}

export interface LoraAdapter {
  config: LoraConfig;
  /** by canonical module name */
  modules: Map<string, LoraModule>;
}

/** peft's init: A ~ kaiming_uniform(a=√5) on [r, in] = U(±1/√in); B = 0. Seeded per module. */
export function initLora(model: QwenVLConfig, cfg: LoraConfig, seed = 0): LoraAdapter {
  validateLoraConfig(cfg, 'LoRA config');
  const modules = new Map<string, LoraModule>();
  for (const s of targetedModules(model, cfg)) {
    const A = new Float32Array(s.r * s.inFeatures);
    const rng = rngFor(seed, `${s.name}.lora_A`);
    const bound = 1 / Math.sqrt(s.inFeatures);
    for (let i = 0; i < A.length; i++) A[i] = rng.uniform(-bound, bound);
    modules.set(s.name, { ...s, A, B: new Float32Array(s.outFeatures * s.r) });
  }
  return { config: cfg, modules };
}

export function loraParamCount(model: QwenVLConfig, cfg: LoraConfig): number {
  return targetedModules(model, cfg).reduce((a, s) => a + s.r * (s.inFeatures + s.outFeatures), 0);
}

export function peftKey(moduleName: string, which: 'A' | 'B', layout: TensorLayout = 'transformers'): string {
  return `base_model.model.${layoutName(moduleName, layout)}.lora_${which}.weight`;
}

function validateLoraConfig(c: LoraConfig, where: string): void {
  if (!Number.isInteger(c.r) || c.r <= 0) throw new LoraError(where, `r must be a positive integer, got ${c.r}`);
  if (!Number.isFinite(c.loraAlpha) || c.loraAlpha <= 0) throw new LoraError(where, `lora_alpha must be positive, got ${c.loraAlpha}`);
  if (!(c.loraDropout >= 0 && c.loraDropout < 1)) throw new LoraError(where, `lora_dropout must be in [0, 1), got ${c.loraDropout}`);
  const pats = typeof c.targetModules === 'string' ? [c.targetModules] : c.targetModules;
  if (!pats.length) throw new LoraError(where, 'target_modules is empty');
  if (typeof c.targetModules === 'string') {
    try {
      new RegExp(c.targetModules);
    } catch (e) {
      throw new LoraError(where, `target_modules is not a valid regular expression: ${(e as Error).message}`);
    }
  }
}

// ---------------------------------------------------------------- adapter_config.json

/** adapter_config.json as peft writes it (the long-standing LoraConfig fields). */
export function adapterConfigJson(c: LoraConfig): Record<string, unknown> {
  const tm = typeof c.targetModules === 'string' ? c.targetModules : [...c.targetModules].sort();
  return {
    alpha_pattern: c.alphaPattern ?? {},
    auto_mapping: null,
    base_model_name_or_path: c.baseModelNameOrPath ?? null,
    bias: 'none',
    ...(c.excludeModules ? { exclude_modules: c.excludeModules } : {}),
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: c.layersToTransform ?? null,
    lora_alpha: c.loraAlpha,
    lora_dropout: c.loraDropout,
    modules_to_save: null,
    peft_type: 'LORA',
    r: c.r,
    rank_pattern: c.rankPattern ?? {},
    revision: c.revision ?? null,
    target_modules: tm,
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: c.useRslora,
  };
}

/** Parse peft's adapter_config.json; refuses variants this engine does not compute (DoRA, bias, extra saved modules). */
export function parseAdapterConfig(json: string | unknown, file = 'adapter_config.json'): LoraConfig {
  let j: unknown = json;
  if (typeof json === 'string') {
    try {
      j = JSON.parse(json);
    } catch (e) {
      throw new LoraError(file, `is not valid JSON (${(e as Error).message})`);
    }
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new LoraError(file, 'is not a JSON object');
  const o = j as Record<string, unknown>;
  if (o.peft_type !== 'LORA') throw new LoraError(file, `peft_type ${JSON.stringify(o.peft_type ?? null)} is not supported (only LORA)`);
  const bad = (k: string, why: string) => {
    throw new LoraError(file, `${k} = ${JSON.stringify(o[k])}: ${why}`);
  };
  if (o.bias !== undefined && o.bias !== 'none') bad('bias', 'only bias "none" is supported');
  if (o.use_dora) bad('use_dora', 'DoRA is not supported');
  if (o.fan_in_fan_out) bad('fan_in_fan_out', 'Qwen2.5-VL layers are nn.Linear (fan_in_fan_out false)');
  if (Array.isArray(o.modules_to_save) && o.modules_to_save.length) bad('modules_to_save', 'fully trained extra modules are not supported');
  if (Array.isArray(o.target_parameters) && o.target_parameters.length) bad('target_parameters', 'not supported');
  if (o.layer_replication) bad('layer_replication', 'not supported');
  if (o.layers_pattern !== undefined && o.layers_pattern !== null && !(Array.isArray(o.layers_pattern) && !o.layers_pattern.length)) bad('layers_pattern', 'not supported');
  const tm = o.target_modules;
  if (!(typeof tm === 'string' || (Array.isArray(tm) && tm.every((x) => typeof x === 'string')))) bad('target_modules', 'must be a list of module names or a regular expression');
  const num = (k: string, def?: number): number => {
    const v = o[k] ?? def;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new LoraError(file, `${k} must be a number, got ${JSON.stringify(o[k])}`);
    return v;
  };
  const ltt = o.layers_to_transform;
  const cfg: LoraConfig = {
    r: num('r', 8),
    loraAlpha: num('lora_alpha', 8),
    loraDropout: num('lora_dropout', 0),
    targetModules: tm as string | string[],
    excludeModules: (o.exclude_modules as string | string[] | null | undefined) ?? null,
    useRslora: o.use_rslora === true,
    rankPattern: (o.rank_pattern as Record<string, number>) ?? {},
    alphaPattern: (o.alpha_pattern as Record<string, number>) ?? {},
    layersToTransform: typeof ltt === 'number' ? [ltt] : Array.isArray(ltt) ? (ltt as number[]) : null,
    baseModelNameOrPath: (o.base_model_name_or_path as string | null) ?? null,
    revision: (o.revision as string | null) ?? null,
  };
  validateLoraConfig(cfg, file);
  return cfg;
}

// ---------------------------------------------------------------- save / load

export interface AdapterFiles {
  'adapter_config.json': Uint8Array;
  'adapter_model.safetensors': Uint8Array;
}

/** peft's save_pretrained output: F32 lora_A/lora_B per module, metadata {"format": "pt"}. */
export function saveAdapter(a: LoraAdapter, opts: { layout?: TensorLayout } = {}): AdapterFiles {
  const layout = opts.layout ?? 'transformers';
  const tensors: StWriteTensor[] = [];
  for (const m of a.modules.values()) {
    tensors.push({ name: peftKey(m.name, 'A', layout), dtype: 'F32', shape: [m.r, m.inFeatures], data: m.A });
    tensors.push({ name: peftKey(m.name, 'B', layout), dtype: 'F32', shape: [m.outFeatures, m.r], data: m.B });
  }
  return {
    'adapter_config.json': new TextEncoder().encode(JSON.stringify(adapterConfigJson(a.config), null, 2) + '\n'),
    'adapter_model.safetensors': writeSafetensors(tensors, { format: 'pt' }),
  };
}

/** Which layout an adapter file's keys use. */
export function adapterLayout(keys: Iterable<string>): TensorLayout {
  for (const k of keys) if (k.startsWith('base_model.model.model.language_model.') || k.startsWith('base_model.model.model.visual.')) return 'transformers';
  return 'hub';
}

/**
 * Read an adapter (either key layout; F32/BF16/F16 tensors) and check it against the model:
 * every key must be lora_A/lora_B of a linear module the model has, shapes [r, in] / [out, r]
 * must agree with the config (and rank_pattern), and the modules present must be exactly the
 * modules the config targets.
 */
export function parseAdapter(configJson: string | unknown, weights: Uint8Array, model: QwenVLConfig, where = 'adapter'): LoraAdapter & { layout: TensorLayout } {
  const cfg = parseAdapterConfig(configJson, `${where}/adapter_config.json`);
  const file = `${where}/adapter_model.safetensors`;
  const st = readSafetensors(weights, file);
  const byName = new Map(linearModules(model).map((m) => [m.name, m]));
  const found = new Map<string, { A?: Float32Array; B?: Float32Array; shapeA?: number[]; shapeB?: number[] }>();
  for (const [key, t] of st.tensors) {
    const m = /^base_model\.model\.(.+)\.lora_([AB])(?:\.[A-Za-z0-9_-]+)?\.weight$/.exec(key);
    if (!m) throw new LoraError(file, `tensor "${key}" is not a peft LoRA weight (expected base_model.model.<module>.lora_A.weight / lora_B.weight)`);
    const mod = canonicalName(m[1]);
    if (!byName.has(mod)) throw new LoraError(file, `tensor "${key}" adapts "${m[1]}", which is not a linear module of this model that LoRA supports`);
    if (t.dtype !== 'F32' && t.dtype !== 'BF16' && t.dtype !== 'F16') throw new LoraError(file, `tensor "${key}" has dtype ${t.dtype}; expected F32, BF16 or F16`);
    const e = found.get(mod) ?? {};
    if (m[2] === 'A') {
      if (e.A) throw new LoraError(file, `module "${m[1]}" has two lora_A tensors`);
      e.A = bytesToF32(t.bytes, t.dtype);
      e.shapeA = t.shape;
    } else {
      if (e.B) throw new LoraError(file, `module "${m[1]}" has two lora_B tensors`);
      e.B = bytesToF32(t.bytes, t.dtype);
      e.shapeB = t.shape;
    }
    found.set(mod, e);
  }
  const layout = adapterLayout(st.tensors.keys());
  const want = targetedModules(model, cfg);
  const wantNames = new Set(want.map((s) => s.name));
  const missing = want.filter((s) => !found.has(s.name)).map((s) => peftKey(s.name, 'A', layout));
  if (missing.length) throw new LoraError(file, `adapter_config.json targets ${want.length} modules but ${missing.length} have no weights: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}`);
  const extra = [...found.keys()].filter((n) => !wantNames.has(n));
  if (extra.length) throw new LoraError(file, `weights for modules that target_modules does not select: ${extra.slice(0, 5).map((n) => layoutName(n, layout)).join(', ')}`);
  const modules = new Map<string, LoraModule>();
  for (const s of want) {
    const e = found.get(s.name)!;
    if (!e.A || !e.B) throw new LoraError(file, `module "${layoutName(s.name, layout)}" has lora_${e.A ? 'A' : 'B'} but no lora_${e.A ? 'B' : 'A'}`);
    const expA = [s.r, s.inFeatures], expB = [s.outFeatures, s.r];
    const eq = (a: number[] | undefined, b: number[]) => !!a && a.length === b.length && a.every((x, i) => x === b[i]);
    if (!eq(e.shapeA, expA)) throw new LoraError(file, `tensor "${peftKey(s.name, 'A', layout)}" has shape [${e.shapeA}] but r=${s.r} and the module's in_features imply [${expA}]`);
    if (!eq(e.shapeB, expB)) throw new LoraError(file, `tensor "${peftKey(s.name, 'B', layout)}" has shape [${e.shapeB}] but r=${s.r} and the module's out_features imply [${expB}]`);
    modules.set(s.name, { ...s, A: e.A, B: e.B });
  }
  return { config: cfg, modules, layout };
}

/** Load adapter_config.json + adapter_model.safetensors from any source (folder, hub, memory). */
export async function loadAdapter(src: ModelSource, model: QwenVLConfig): Promise<LoraAdapter & { layout: TensorLayout }> {
  const get = async (f: string) => {
    try {
      return await src.read(f);
    } catch (e) {
      if (e instanceof MissingFileError) throw new LoraError(src.id, `${f} is missing: a peft adapter is adapter_config.json + adapter_model.safetensors`);
      throw e;
    }
  };
  const cfgBytes = await get('adapter_config.json');
  const w = await get('adapter_model.safetensors');
  return parseAdapter(new TextDecoder().decode(cfgBytes), w, model, src.id);
}
