// 4-bit NF4 base weights (QLoRA), two ways in:
//   - quantise on load: a BF16 / F16 / F32 checkpoint, each Linear weight quantised on the CPU as
//     it streams in (bitsandbytes' algorithm, src/ops/cpu/nf4.ts) and only the 4-bit form uploaded;
//     the full-precision tensor is dropped at once, so neither the CPU nor the GPU ever holds more
//     than one full-precision tensor. (The CPU is where the tensor already is; quantising there
//     uploads 0.53 byte per weight instead of 2, and needs no full-precision GPU staging buffer.)
//   - a checkpoint saved by transformers with BitsAndBytesConfig(load_in_4bit=True,
//     bnb_4bit_quant_type="nf4"): config.json `quantization_config`, and per quantised Linear
//     `<m>.weight` U8 [(n+1)/2, 1] + `<m>.weight.absmax`, `.quant_map`, (`.nested_absmax`,
//     `.nested_quant_map`), `.quant_state.bitsandbytes__nf4` (QuantState.as_dict(packed=True): a
//     JSON blob in a U8 tensor). `llm_int8_skip_modules` stay full precision.
//
// Which layers: bitsandbytes' rule for transformers (replace_with_bnb_linear): every nn.Linear —
// the decoder's q/k/v/o and gate/up/down, the vision tower's qkv, proj, gate/up/down and the
// merger's mlp.0 / mlp.2 — except the output embedding (lm_head) and modules_to_not_convert.
// Embeddings, norms, biases and the conv3d patch embed stay BF16. quantizeVision: false keeps the
// vision tower (and merger) BF16 — a pre-quantised tower is then dequantised on load.
import { dequantizeNf4, quantizeNf4 } from '../ops/cpu/nf4.ts';
import type { Nf4Data, Nf4DType } from '../gpu/nf4.ts';
import type { QwenVLConfig } from './config.ts';
import { expectedWeights, layoutName, WeightsError, type StTensorInfo } from './weights.ts';

export type QuantizeMode = 'nf4';

/** What a load quantises: from LoadOptions and the checkpoint's config.json. */
export interface QuantPlan {
  /** quantise full-precision Linear weights on load */
  quantize?: QuantizeMode;
  /** vision tower Linear layers in NF4 too (default true, as bitsandbytes) */
  quantizeVision: boolean;
  /** the checkpoint is already bitsandbytes 4-bit (config.json quantization_config) */
  prequantized?: BnbConfig;
  /** double quantisation when quantising on load (bnb_4bit_use_double_quant; default true, as QLoRA) */
  doubleQuant: boolean;
  /** module names kept full precision (llm_int8_skip_modules plus lm_head) */
  skipModules: string[];
}

export interface BnbConfig {
  quantType: 'nf4';
  doubleQuant: boolean;
  skipModules: string[];
  computeDtype?: string;
}

export class QuantError extends Error {
  constructor(where: string, what: string) {
    super(`${where}: ${what}`);
    this.name = 'QuantError';
  }
}

/**
 * Read config.json's quantization_config: bitsandbytes 4-bit NF4 is accepted; fp4, 8-bit, GPTQ,
 * AWQ and every other method are refused with a clear message. undefined when not quantised.
 */
export function parseQuantizationConfig(cfg: QwenVLConfig, where = 'config.json'): BnbConfig | undefined {
  const q = cfg.raw.quantization_config;
  if (q === undefined || q === null) return undefined;
  if (typeof q !== 'object' || Array.isArray(q)) throw new QuantError(where, 'quantization_config is not an object');
  const o = q as Record<string, unknown>;
  const method = String(o.quant_method ?? (o.load_in_4bit || o.load_in_8bit ? 'bitsandbytes' : 'unknown'));
  if (method !== 'bitsandbytes') {
    throw new QuantError(where, `quantization_config.quant_method "${method}" is not supported: only bitsandbytes 4-bit NF4 checkpoints load (GPTQ, AWQ and other formats do not); use the full-precision model, optionally with 4-bit NF4 quantisation on load`);
  }
  const four = o.load_in_4bit ?? o._load_in_4bit;
  if (o.load_in_8bit === true || o._load_in_8bit === true) throw new QuantError(where, 'quantization_config is bitsandbytes 8-bit (load_in_8bit): not supported; only 4-bit NF4 is');
  if (four !== true) throw new QuantError(where, 'quantization_config is bitsandbytes but load_in_4bit is not true: only 4-bit NF4 is supported');
  const type = String(o.bnb_4bit_quant_type ?? 'fp4'); // BitsAndBytesConfig's default is fp4
  if (type !== 'nf4') throw new QuantError(where, `quantization_config.bnb_4bit_quant_type "${type}" is not supported: only "nf4" is implemented`);
  const storage = String(o.bnb_4bit_quant_storage ?? 'uint8');
  if (storage !== 'uint8') throw new QuantError(where, `quantization_config.bnb_4bit_quant_storage "${storage}" is not supported: only "uint8"`);
  const skip = o.llm_int8_skip_modules;
  if (skip !== undefined && skip !== null && !(Array.isArray(skip) && skip.every((s) => typeof s === 'string'))) throw new QuantError(where, 'quantization_config.llm_int8_skip_modules must be a list of module names');
  return { quantType: 'nf4', doubleQuant: o.bnb_4bit_use_double_quant === true, skipModules: (skip as string[] | undefined) ?? [], computeDtype: o.bnb_4bit_compute_dtype as string | undefined };
}

/** The load's plan from the options and the config (throws on unsupported quantisation). */
export function quantPlan(cfg: QwenVLConfig, opts: { quantize?: QuantizeMode; quantizeVision?: boolean; doubleQuant?: boolean }, where = 'config.json'): QuantPlan {
  if (opts.quantize !== undefined && opts.quantize !== 'nf4') throw new QuantError('load options', `quantize "${String(opts.quantize)}" is not supported: use "nf4" (fp4, int8, GPTQ and AWQ are not implemented)`);
  const pre = parseQuantizationConfig(cfg, where);
  return {
    quantize: opts.quantize,
    quantizeVision: opts.quantizeVision ?? true,
    prequantized: pre,
    doubleQuant: opts.doubleQuant ?? pre?.doubleQuant ?? true,
    skipModules: ['lm_head', ...(pre?.skipModules ?? [])],
  };
}

/** transformers quantizers_utils.should_convert_module: a pattern skips a module name when it is a
 *  prefix (regex match at the start, with or without a following dot) or a suffix. */
export function shouldConvertModule(fullName: string, patterns: readonly string[]): boolean {
  return !patterns.some((k) => {
    try {
      return new RegExp(`^(?:${k})`).test(fullName) || fullName.endsWith(k);
    } catch {
      return fullName.startsWith(k) || fullName.endsWith(k);
    }
  });
}

const TEXT_LINEAR = /^model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)$/;
const VISION_LINEAR = /^visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate|up|down)_proj)|merger\.mlp\.(0|2))$/;

/** 'text' / 'vision' when the module (hub name, no `.weight`) is an nn.Linear bitsandbytes converts. */
export function linearKind(module: string): 'text' | 'vision' | undefined {
  if (TEXT_LINEAR.test(module)) return 'text';
  if (VISION_LINEAR.test(module)) return 'vision';
  return undefined;
}

/** Whether the weight `name` (canonical hub name) is stored as NF4 under this plan (quantise-on-load rule). */
export function quantizesOnLoad(name: string, plan: QuantPlan): boolean {
  if (!plan.quantize || !name.endsWith('.weight')) return false;
  const module = name.slice(0, -'.weight'.length);
  const kind = linearKind(module);
  if (!kind || (kind === 'vision' && !plan.quantizeVision)) return false;
  return shouldConvertModule(module, plan.skipModules) && shouldConvertModule(layoutName(module, 'transformers'), plan.skipModules);
}

/** Quantise one full-precision weight (values as f32) for upload. */
export function quantizeWeight(values: Float32Array, shape: number[], plan: QuantPlan): Nf4Data {
  return quantizeNf4(values, shape, { doubleQuant: plan.doubleQuant, dtype: 'bfloat16' });
}

// ---------------------------------------------------------------- pre-quantised checkpoints

const STATE_KEYS = ['absmax', 'quant_map', 'nested_absmax', 'nested_quant_map', 'quant_state.bitsandbytes__nf4', 'quant_state.bitsandbytes__fp4'] as const;
type StateKey = (typeof STATE_KEYS)[number];

interface Parts { weight?: { bytes: Uint8Array; info: StTensorInfo }; state: Partial<Record<StateKey, { bytes: Uint8Array; info: StTensorInfo }>> }

function splitName(canonical: string): { weight: string; key: StateKey } | undefined {
  for (const k of STATE_KEYS) if (canonical.endsWith(`.weight.${k}`)) return { weight: canonical.slice(0, -k.length - 1), key: k };
  return undefined;
}

function f32Of(p: { bytes: Uint8Array; info: StTensorInfo }, what: string): Float32Array {
  if (p.info.dtype !== 'F32') throw new Error(`${what} must be F32, got ${p.info.dtype}`);
  return new Float32Array(p.bytes.buffer.slice(p.bytes.byteOffset, p.bytes.byteOffset + p.bytes.byteLength));
}

/**
 * Collects a bitsandbytes 4-bit checkpoint's quantised weights from loadWeights' raw hook and
 * hands each over, validated, as soon as all its parts have been read (then drops the bytes).
 */
export class Bnb4bitReader {
  private parts = new Map<string, Parts>();
  private expected: Map<string, number[]>;
  private done = new Set<string>();
  constructor(private cfg: QwenVLConfig, private where: string, private onWeight: (name: string, d: Nf4Data) => void) {
    this.expected = expectedWeights(cfg);
  }

  /** loadWeights' raw.claim: the quant state tensors, and U8 weights. */
  claim = (canonical: string, info: StTensorInfo, file: string): boolean => {
    const s = splitName(canonical);
    if (s) {
      if (s.key === 'quant_state.bitsandbytes__fp4') throw new QuantError(`${this.where}: ${file}`, `tensor "${info.name}": fp4 quantisation is not supported, only nf4`);
      if (!this.expected.has(s.weight)) throw new QuantError(`${this.where}: ${file}`, `tensor "${info.name}" is the quant state of "${s.weight}", which config.json does not have`);
      return true;
    }
    if (info.dtype === 'U8' && canonical.endsWith('.weight')) {
      const module = canonical.slice(0, -'.weight'.length);
      if (!this.expected.has(canonical)) return false; // loadWeights reports it as unused
      if (!linearKind(module)) throw new QuantError(`${this.where}: ${file}`, `tensor "${info.name}" is 4-bit but bitsandbytes only quantises Linear layers (embeddings, norms, lm_head and the patch embed stay full precision)`);
      return true;
    }
    return false;
  };

  /** loadWeights' raw.onRaw */
  onRaw = (canonical: string, bytes: Uint8Array, info: StTensorInfo): void => {
    const s = splitName(canonical);
    const weight = s ? s.weight : canonical;
    let p = this.parts.get(weight);
    if (!p) this.parts.set(weight, (p = { state: {} }));
    if (s) p.state[s.key] = { bytes, info };
    else p.weight = { bytes, info };
    this.tryFinish(weight, p, false);
  };

  /** After loading: every quantised weight complete (else an error naming the missing part). */
  finish(): void {
    for (const [w, p] of this.parts) this.tryFinish(w, p, true);
  }

  private tryFinish(weight: string, p: Parts, final: boolean): void {
    if (this.done.has(weight)) return;
    const qsKey = 'quant_state.bitsandbytes__nf4';
    const name = (k?: string) => `"${layoutName(weight, 'transformers')}${k ? '.' + k : ''}"`;
    const err = (k: string | undefined, what: string) => new QuantError(this.where, `tensor ${name(k)}: ${what}`);
    const qs = p.state[qsKey];
    if (!p.weight || !qs || !p.state.absmax || !p.state.quant_map) {
      if (!final) return;
      const missing = [!p.weight && '', !qs && qsKey, !p.state.absmax && 'absmax', !p.state.quant_map && 'quant_map'].filter((x) => x !== false) as string[];
      throw new QuantError(this.where, `the 4-bit weight ${name()} is incomplete: ${missing.map((k) => name(k || undefined)).join(', ')} missing from the checkpoint`);
    }
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(qs.bytes));
      if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new Error('not a JSON object');
    } catch (e) {
      throw err(qsKey, `corrupt quant state (${(e as Error).message}); expected the JSON of QuantState.as_dict(packed=True)`);
    }
    const nested = 'nested_offset' in j || 'nested_blocksize' in j;
    if (nested && (!p.state.nested_absmax || !p.state.nested_quant_map)) {
      if (!final) return;
      throw err(undefined, `double-quantised (quant state has nested_offset) but ${!p.state.nested_absmax ? name('nested_absmax') : name('nested_quant_map')} is missing`);
    }
    this.done.add(weight);
    this.parts.delete(weight);
    if (j.quant_type !== 'nf4') throw err(qsKey, `quant_type ${JSON.stringify(j.quant_type)}: only "nf4" is supported`);
    const shape = j.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) throw err(qsKey, `quant state "shape" ${JSON.stringify(shape)} is not a list of sizes`);
    const want = this.expected.get(weight)!;
    if (shape.length !== want.length || shape.some((d, i) => d !== want[i])) throw err(undefined, `quantised shape [${shape.join(', ')}] (quant state) but config.json implies [${want.join(', ')}]`);
    const numel = want.reduce((a, b) => a * b, 1);
    const wi = p.weight.info;
    if (wi.dtype !== 'U8' || p.weight.bytes.length !== (numel + 1) >> 1) throw err(undefined, `${wi.dtype} [${wi.shape.join(', ')}] holds ${p.weight.bytes.length} bytes but a 4-bit [${want.join(', ')}] needs U8 [${(numel + 1) >> 1}, 1]`);
    const blocksize = j.blocksize;
    if (typeof blocksize !== 'number' || ![32, 64, 128, 256, 512, 1024, 2048, 4096].includes(blocksize)) throw err(qsKey, `blocksize ${JSON.stringify(blocksize)} is not one of bitsandbytes' 32…4096`);
    const dtype = String(j.dtype);
    if (dtype !== 'bfloat16' && dtype !== 'float16' && dtype !== 'float32') throw err(qsKey, `dtype "${dtype}" is not bfloat16, float16 or float32`);
    const blocks = Math.ceil(numel / blocksize);
    let code: Float32Array;
    try {
      code = f32Of(p.state.quant_map, 'quant_map');
    } catch (e) {
      throw err('quant_map', (e as Error).message);
    }
    if (code.length !== 16) throw err('quant_map', `has ${code.length} values; the NF4 map has 16`);
    const am = p.state.absmax;
    const d: Nf4Data = { shape: want, packed: p.weight.bytes, absmax: new Float32Array(0), blocksize, code, dtype: dtype as Nf4DType };
    if (nested) {
      const nb = Number(j.nested_blocksize ?? 256), off = Number(j.nested_offset);
      if (!Number.isFinite(off)) throw err(qsKey, `nested_offset ${JSON.stringify(j.nested_offset)} is not a number`);
      if (![32, 64, 128, 256, 512, 1024, 2048, 4096].includes(nb)) throw err(qsKey, `nested_blocksize ${JSON.stringify(j.nested_blocksize)} is not a power of two in 32…4096`);
      if (j.nested_dtype !== undefined && j.nested_dtype !== 'float32') throw err(qsKey, `nested_dtype "${String(j.nested_dtype)}" is not float32`);
      if (am.info.dtype !== 'U8' || am.bytes.length !== blocks) throw err('absmax', `${am.info.dtype} [${am.info.shape.join(', ')}] but ${blocks} blocks of ${blocksize} need U8 [${blocks}] (double-quantised absmax)`);
      let nabs: Float32Array, ncode: Float32Array;
      try {
        nabs = f32Of(p.state.nested_absmax!, 'nested_absmax');
      } catch (e) {
        throw err('nested_absmax', (e as Error).message);
      }
      try {
        ncode = f32Of(p.state.nested_quant_map!, 'nested_quant_map');
      } catch (e) {
        throw err('nested_quant_map', (e as Error).message);
      }
      if (nabs.length !== Math.ceil(blocks / nb)) throw err('nested_absmax', `has ${nabs.length} values but ${blocks} absmax codes in blocks of ${nb} need ${Math.ceil(blocks / nb)}`);
      if (ncode.length !== 256) throw err('nested_quant_map', `has ${ncode.length} values; the 8-bit map has 256`);
      d.nested = { q: am.bytes, absmax: nabs, offset: Math.fround(off), code: ncode, blocksize: nb };
    } else {
      let a: Float32Array;
      try {
        a = f32Of(am, 'absmax');
      } catch (e) {
        throw err('absmax', (e as Error).message);
      }
      if (a.length !== blocks) throw err('absmax', `has ${a.length} values but [${want.join(', ')}] in blocks of ${blocksize} has ${blocks}`);
      d.absmax = a;
    }
    this.onWeight(weight, d);
  }
}

/** bf16 bits of a dequantised NF4 tensor (a pre-quantised vision tower kept BF16). */
export function nf4ToBf16Bits(d: Nf4Data): Uint16Array {
  const v = dequantizeNf4(d, 'bfloat16');
  const u = new Uint32Array(v.buffer);
  const out = new Uint16Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = u[i] >>> 16;
  return out;
}

/** The 4-bit module names of a plan applied to a config (memory estimate, reports). */
export function quantizedModules(cfg: QwenVLConfig, plan: QuantPlan): string[] {
  return [...expectedWeights(cfg).keys()].filter((n) => quantizesOnLoad(n, { ...plan, quantize: 'nf4' })).map((n) => n.slice(0, -'.weight'.length));
}

/**
 * peft's base_model_name_or_path for an adapter trained on an NF4 base: the full-precision model.
 * Quantise-on-load bases are their own id; a pre-quantised hub repo names its full-precision
 * original by the usual suffixes ("unsloth/Qwen2.5-VL-3B-Instruct-unsloth-bnb-4bit" and
 * "…-bnb-4bit" → "unsloth/Qwen2.5-VL-3B-Instruct", unsloth's full-precision mirror of Qwen's).
 */
export function fullPrecisionBaseId(id: string): string {
  return id.replace(/(-unsloth)?-bnb-4bit$|-bnb-nf4$|-nf4$|-4bit$/i, '');
}

/**
 * transformers' BitsAndBytesConfig keyword arguments for the same NF4 base on a cluster (the
 * cluster bundle's train.py: `BitsAndBytesConfig(**bnb)`, then `prepare_model_for_kbit_training`).
 * quantizeVision false skips the vision tower by the module names of both transformers layouts
 * (`model.visual.*` in ≥ 4.52, `visual.*` before); lm_head is listed because an explicit skip list
 * replaces transformers' default one.
 */
export function bitsandbytesConfig(opts: { quantizeVision?: boolean; doubleQuant?: boolean } = {}): Record<string, unknown> {
  return {
    load_in_4bit: true,
    bnb_4bit_quant_type: 'nf4',
    bnb_4bit_use_double_quant: opts.doubleQuant ?? true,
    bnb_4bit_compute_dtype: 'bfloat16',
    bnb_4bit_quant_storage: 'uint8',
    llm_int8_skip_modules: opts.quantizeVision === false ? ['lm_head', 'model.visual', 'visual'] : ['lm_head'],
  };
}
