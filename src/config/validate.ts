// validate(config) → every problem of a training config at once, each named by its field path
// ("optim.learningRate") with what to do. Unknown keys are errors (a typo must never fall back to a
// default silently) and suggest the nearest valid key; types and ranges are checked per field;
// cross-field rules (min ≤ max pixels, warmup < steps, batch and steps against the dataset size when
// the caller knows it) after. parseConfig() reads a partial config (the CLI's --config JSON, with trl's
// argument names accepted too) over the defaults and validates the result.
import { DEFAULT_CONFIG, evalImageCount, LR_SCHEDULERS, METHODS, REWARDS, TRL_NAMES, mergeConfig, missingModelFiles, totalSteps, type DeepPartial, type TrainConfig } from './config.ts';

export interface ConfigError {
  /** field path, e.g. "optim.learningRate"; "" for the config as a whole */
  path: string;
  message: string;
}

export interface ValidateContext {
  /** training examples the run will see (after the method's filter): enables the dataset rules */
  datasetSize?: number;
  /** distinct images of the dataset before the eval split (default datasetSize): enables the split rule */
  datasetImages?: number;
  /** check where the model comes from (hub id, endpoint, local folder files); default true. The
   * cluster bundle names its own model (train.py --model), so it passes false. */
  modelSource?: boolean;
}

/** Limits no sane run reaches; beyond them a run would hang or exhaust memory before it fails. */
export const LIMITS = { maxSteps: 1_000_000, batch: 1024, maxPixels: 12_845_056, maxLength: 131_072, generations: 64 };

// ---------------------------------------------------------------------------------------------
// nearest key

/** Edit distance (optimal string alignment: insertions, deletions, substitutions, adjacent swaps). */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i ? (j ? 0 : i) : j)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** camelCase and snake_case spell the same key: compare lower-case without underscores or dashes. */
const norm = (s: string) => s.toLowerCase().replace(/[_-]/g, '');

/** The candidate closest to `key` (edit distance on normalised spellings), if close enough to be a typo. */
export function nearestKey(key: string, candidates: Iterable<string>, spelling: (c: string) => string = (c) => c): string | undefined {
  let best: string | undefined, bestD = Infinity;
  const k = norm(key);
  for (const c of candidates) {
    const d = editDistance(k, norm(spelling(c)));
    if (d < bestD) [best, bestD] = [c, d];
  }
  return bestD <= Math.max(1, Math.floor(k.length / 3)) ? best : undefined;
}

/** Every leaf path of the config ("optim.learningRate", ...). */
function leafPaths(o: unknown, prefix = ''): string[] {
  if (!o || typeof o !== 'object' || Array.isArray(o)) return [prefix];
  return Object.entries(o).flatMap(([k, v]) => leafPaths(k === 'local' ? { name: '', files: [] } : v, prefix ? `${prefix}.${k}` : k));
}
const LEAVES = leafPaths(DEFAULT_CONFIG);

function unknownKeyMessage(path: string, key: string, here: string[]): string {
  // the same section first, then any leaf anywhere (a key put in the wrong section), then trl's names
  const local = nearestKey(key, here);
  const leaf = local ? undefined : nearestKey(key, LEAVES, (p) => p.split('.').pop()!);
  const trl = local || leaf ? undefined : nearestKey(key, Object.keys(TRL_NAMES));
  const full = (k: string) => (path ? `${path}.${k}` : k);
  const target = local ? full(local) : leaf ?? (trl ? TRL_NAMES[trl] : undefined);
  const alias = target && Object.keys(TRL_NAMES).find((n) => TRL_NAMES[n] === target);
  const hint = target ? `did you mean "${target}"${alias ? ` (trl: ${alias})` : ''}?` : `valid here: ${here.join(', ')}.`;
  return `unknown setting "${full(key)}": ${hint}`;
}

/** Keys of `input` that the config does not have (recursively, against the shape of `shape`). */
function unknownKeys(input: unknown, shape: unknown, path: string, out: ConfigError[], trlNames = false): void {
  if (!input || typeof input !== 'object' || Array.isArray(input) || !shape || typeof shape !== 'object') return;
  const here = Object.keys(shape);
  for (const [k, v] of Object.entries(input)) {
    const p = path ? `${path}.${k}` : k;
    if (trlNames && k in TRL_NAMES) continue;
    if (!(k in shape)) {
      out.push({ path: p, message: unknownKeyMessage(path, k, here) });
      continue;
    }
    const s = (shape as Record<string, unknown>)[k];
    if (k === 'local' && path === 'model') unknownKeys(v, { name: '', files: [] }, p, out);
    else if (s && typeof s === 'object' && !Array.isArray(s)) {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) out.push({ path: p, message: `"${p}" is a section of settings (an object), got ${JSON.stringify(v)}.` });
      else unknownKeys(v, s, p, out);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// fields

type Check = (v: unknown) => boolean;
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const int = (lo: number, hi: number): Check => (v) => isNum(v) && Number.isInteger(v) && v >= lo && v <= hi;
const num = (ok: (x: number) => boolean): Check => (v) => isNum(v) && ok(v);
const oneOf = (values: readonly string[]): Check => (v) => typeof v === 'string' && values.includes(v);
const bool: Check = (v) => typeof v === 'boolean';
const rewards: Check = (v) => Array.isArray(v) && v.length > 0 && v.every((r) => REWARDS.includes(r)) && new Set(v).size === v.length;

/** [path, check, message, only for this method] */
const FIELDS: [string, Check, string, TrainConfig['method']?][] = [
  ['model.quantize', oneOf(['none', 'nf4']), 'Quantisation is "none" or "nf4" (QLoRA: the frozen base in NF4).'],
  ['model.quantizeVision', bool, 'quantizeVision is true (quantise the vision tower too, as bitsandbytes does) or false.'],
  ['method', oneOf(METHODS), `The method is one of ${METHODS.join(', ')}.`],
  ['lora.r', int(1, 256), 'Rank r is a whole number from 1 to 256.'],
  ['lora.alpha', num((x) => x > 0 && x <= 4096), 'Alpha must be greater than 0 (usually 2·r).'],
  ['lora.dropout', num((x) => x >= 0 && x < 1), 'Dropout is a probability in [0, 1).'],
  ['lora.targetModules', (v) => Array.isArray(v) && v.length > 0 && v.every((m) => typeof m === 'string' && m.length > 0), 'Choose at least one module to adapt (e.g. q_proj, v_proj).'],
  ['lora.useRslora', bool, 'useRslora is true or false.'],
  ['optim.learningRate', num((x) => x > 0 && x < 1), 'The learning rate must be a number in (0, 1); LoRA usually uses 1e-5 to 1e-3 (a larger one makes the adapter diverge).'],
  ['optim.lrScheduler', oneOf(LR_SCHEDULERS), `The schedule is one of ${LR_SCHEDULERS.join(', ')}.`],
  ['optim.warmupSteps', int(0, LIMITS.maxSteps), 'Warmup steps is a whole number ≥ 0.'],
  ['optim.numEpochs', num((x) => x >= 0 && x <= 1000), 'Epochs is a number from 0 to 1000 (0 only with a number of steps).'],
  ['optim.maxSteps', int(0, LIMITS.maxSteps), `Max steps is a whole number from 0 (= use epochs) to ${LIMITS.maxSteps}.`],
  ['optim.batchSize', int(1, LIMITS.batch), `Batch size is a whole number from 1 to ${LIMITS.batch}.`],
  ['optim.gradAccumSteps', int(1, LIMITS.batch), `Gradient accumulation is a whole number from 1 to ${LIMITS.batch}.`],
  ['optim.maxGradNorm', num((x) => x >= 0), 'Max grad norm is ≥ 0 (0 = no clipping).'],
  ['optim.weightDecay', num((x) => x >= 0 && x < 1), 'Weight decay is in [0, 1) (0.01 is usual when used).'],
  ['optim.seed', int(0, 2 ** 32 - 1), 'The seed is a whole number from 0 to 4294967295.'],
  ['optim.saveSteps', int(0, LIMITS.maxSteps), 'Checkpoint every is a whole number of steps ≥ 0 (0 = only on pause, stop and the end).'],
  ['optim.beta1', num((x) => x >= 0 && x < 1), 'AdamW beta1 is in [0, 1) (0.9 is usual).'],
  ['optim.beta2', num((x) => x >= 0 && x < 1), 'AdamW beta2 is in [0, 1) (0.999 is usual).'],
  ['optim.eps', num((x) => x > 0 && x < 1), 'AdamW eps is a small positive number (1e-8 is usual).'],
  ['data.minPixels', int(28 * 28, LIMITS.maxPixels), 'Min pixels is a whole number ≥ 784 (one 28×28 patch).'],
  ['data.maxPixels', int(28 * 28, LIMITS.maxPixels), `Max pixels is a whole number from 784 to ${LIMITS.maxPixels} (the Qwen2.5-VL processor's limit).`],
  ['data.maxLength', int(64, LIMITS.maxLength), 'Max length is a whole number of tokens ≥ 64.'],
  ['dpo.beta', num((x) => x > 0 && x <= 100), 'β must be greater than 0 (0.1 is usual).', 'dpo'],
  ['dpo.labelSmoothing', num((x) => x >= 0 && x < 0.5), 'Label smoothing is in [0, 0.5).', 'dpo'],
  ['grpo.numGenerations', int(2, LIMITS.generations), `GRPO compares answers within a group: 2 to ${LIMITS.generations} generations.`, 'grpo'],
  ['grpo.beta', num((x) => x >= 0), 'β (KL weight) is ≥ 0.', 'grpo'],
  ['grpo.temperature', num((x) => x > 0 && x <= 10), 'Temperature must be greater than 0 (and at most 10).', 'grpo'],
  ['grpo.maxNewTokens', int(1, LIMITS.maxLength), 'Max new tokens is a whole number ≥ 1.', 'grpo'],
  ['grpo.rewards', rewards, `Choose one or more rewards, each once, from ${REWARDS.join(', ')}.`, 'grpo'],
  ['grpo.epsilon', num((x) => x > 0 && x < 1), 'The clip range epsilon is in (0, 1); 0.2 is usual.', 'grpo'],
  ['ppo.clipRange', num((x) => x > 0 && x < 1), 'The clip range is in (0, 1); 0.2 is usual.', 'ppo'],
  ['ppo.vfCoef', num((x) => x >= 0), 'The value-loss weight is ≥ 0.', 'ppo'],
  ['ppo.klCoef', num((x) => x >= 0), 'The KL weight is ≥ 0.', 'ppo'],
  ['ppo.gamma', num((x) => x > 0 && x <= 1), 'γ is in (0, 1].', 'ppo'],
  ['ppo.lam', num((x) => x >= 0 && x <= 1), 'λ is in [0, 1].', 'ppo'],
  ['ppo.temperature', num((x) => x > 0 && x <= 10), 'Temperature must be greater than 0 (and at most 10).', 'ppo'],
  ['ppo.maxNewTokens', int(1, LIMITS.maxLength), 'Max new tokens is a whole number ≥ 1.', 'ppo'],
  ['ppo.numPpoEpochs', int(1, 100), 'PPO epochs (passes over each rollout) is a whole number from 1 to 100 (trl default 4).', 'ppo'],
  ['ppo.numMiniBatches', int(1, LIMITS.batch), `Mini-batches per rollout is a whole number from 1 to ${LIMITS.batch} (trl default 1).`, 'ppo'],
  ['eval.evalSplit', num((x) => x === 0 || (x > 0 && x < 1) || (Number.isInteger(x) && x >= 1 && x <= LIMITS.maxSteps)), 'The eval split is 0 (none), a fraction of the images between 0 and 1, or a whole number of images ≥ 1.'],
  ['eval.evalSteps', int(0, LIMITS.maxSteps), 'Eval steps is a whole number of optimizer steps ≥ 0 (0 = evaluate at the end only).'],
  ['eval.evalMaxNewTokens', int(1, LIMITS.maxLength), 'Eval max new tokens is a whole number ≥ 1.'],
  ['ppo.rewards', rewards, `Choose one or more rewards, each once, from ${REWARDS.join(', ')}.`, 'ppo'],
];

function get(o: unknown, path: string): unknown {
  let v = o;
  for (const k of path.split('.')) v = v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
  return v;
}

const shown = (v: unknown) => (v === undefined ? 'nothing' : typeof v === 'number' && !Number.isFinite(v) ? String(v) : JSON.stringify(v));

function modelErrors(m: TrainConfig['model'], e: ConfigError[]): void {
  const add = (path: string, message: string): void => void e.push({ path, message });
  if (!['tiny', 'hub', 'local'].includes(m?.source)) return add('model.source', `The model source is tiny, hub or local, got ${shown(m?.source)}.`);
  if (m.source === 'hub') {
    if (typeof m.hubId !== 'string' || !/^[\w.-]+\/[\w.-]+$/.test(m.hubId.trim())) add('model.hubId', 'A hub id looks like "owner/name", e.g. Qwen/Qwen2.5-VL-3B-Instruct.');
    try {
      const u = new URL(m.endpoint);
      if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error();
    } catch {
      add('model.endpoint', 'The endpoint must be an http(s) URL, e.g. https://huggingface.co.');
    }
    if (typeof m.revision !== 'string' || !m.revision.trim()) add('model.revision', 'The revision is a branch, tag or commit, e.g. main.');
  }
  if (m.source === 'local') {
    if (!m.local) add('model.local', 'Pick a model folder.');
    else if (typeof m.local.name !== 'string' || !Array.isArray(m.local.files)) add('model.local', 'A local model is { "name": folder, "files": [its file names] }.');
    else {
      const missing = missingModelFiles(m.local.files);
      if (missing.length) add('model.local', `The folder "${m.local.name}" lacks ${missing.join(', ')}.`);
    }
  }
}

/**
 * Every problem of a full config, by field path (empty when it can be trained). Keys the config does
 * not have are errors with the nearest valid key; `ctx.datasetSize` adds the rules that need the data.
 */
export function validate(config: unknown, ctx: ValidateContext = {}): ConfigError[] {
  const e: ConfigError[] = [];
  if (!config || typeof config !== 'object' || Array.isArray(config)) return [{ path: '', message: `A training config is a JSON object, got ${shown(config)}.` }];
  unknownKeys(config, DEFAULT_CONFIG, '', e);
  const c = config as TrainConfig;
  if (ctx.modelSource !== false) modelErrors(c.model, e);
  const bad = new Set<string>();
  for (const [path, ok, message, method] of FIELDS) {
    if (method && c.method !== method) continue;
    const v = get(c, path);
    if (!ok(v)) {
      e.push({ path, message: `${message} Got ${shown(v)}.` });
      bad.add(path);
    }
  }
  // cross-field rules, on fields that passed their own check
  const fine = (...p: string[]) => p.every((x) => !bad.has(x));
  const o = c.optim, d = c.data;
  if (fine('data.minPixels', 'data.maxPixels') && d.maxPixels < d.minPixels) e.push({ path: 'data.maxPixels', message: `Max pixels (${d.maxPixels}) must be ≥ min pixels (${d.minPixels}).` });
  if (fine('optim.maxSteps', 'optim.numEpochs') && o.maxSteps === 0 && o.numEpochs === 0) e.push({ path: 'optim.numEpochs', message: 'Set epochs > 0, or a number of steps.' });
  if (fine('optim.maxSteps', 'optim.warmupSteps') && o.maxSteps > 0 && o.warmupSteps >= o.maxSteps) e.push({ path: 'optim.warmupSteps', message: `Warmup (${o.warmupSteps}) must be shorter than the run (${o.maxSteps} steps).` });
  for (const m of ['grpo', 'ppo'] as const) {
    if (c.method === m && fine(`${m}.maxNewTokens`, 'data.maxLength') && c[m].maxNewTokens >= d.maxLength) e.push({ path: `${m}.maxNewTokens`, message: `Max new tokens (${c[m].maxNewTokens}) leaves no room for the prompt in max length ${d.maxLength}.` });
  }
  if (fine('eval.evalMaxNewTokens', 'data.maxLength') && c.eval.evalMaxNewTokens >= d.maxLength) e.push({ path: 'eval.evalMaxNewTokens', message: `Eval max new tokens (${c.eval.evalMaxNewTokens}) leaves no room for the prompt in max length ${d.maxLength}.` });
  const images = ctx.datasetImages ?? ctx.datasetSize;
  if (images !== undefined && images > 0 && fine('eval.evalSplit') && c.eval.evalSplit > 0) {
    // split by image: at least one image on each side
    const k = evalImageCount(c.eval, images);
    if (k >= images) e.push({ path: 'eval.evalSplit', message: `An eval split of ${c.eval.evalSplit} holds out ${k} of the dataset's ${images} images, leaving none to train on: hold out at most ${images - 1}${images > 1 ? ` (a fraction ≤ ${((images - 1) / images).toFixed(2)})` : ', or add images'}.` });
  }
  const n = ctx.datasetSize;
  if (n !== undefined && fine('optim.batchSize', 'optim.gradAccumSteps', 'optim.maxSteps', 'optim.numEpochs', 'optim.warmupSteps')) {
    if (n === 0) e.push({ path: '', message: `The dataset has no training examples for ${String(c.method).toUpperCase()}.` });
    else {
      if (o.batchSize > n) e.push({ path: 'optim.batchSize', message: `Batch size ${o.batchSize} is more than the dataset's ${n} examples: use at most ${n}.` });
      const steps = totalSteps(c, n);
      if (steps > LIMITS.maxSteps) e.push({ path: o.maxSteps > 0 ? 'optim.maxSteps' : 'optim.numEpochs', message: `${o.numEpochs} epochs of ${n} examples is ${steps} steps, above ${LIMITS.maxSteps}: use fewer epochs or set max steps.` });
      else if (o.maxSteps === 0 && o.warmupSteps >= steps) e.push({ path: 'optim.warmupSteps', message: `Warmup (${o.warmupSteps}) must be shorter than the run (${steps} steps: ${o.numEpochs} epochs of ${n} examples).` });
    }
  }
  return e;
}

/**
 * A partial config (the CLI's --config JSON) over the defaults, validated. Sections as in TrainConfig;
 * trl's flat argument names (learning_rate, lora_r, ...) are accepted at the top level too.
 */
export function parseConfig(input: unknown, ctx: ValidateContext = {}): { config: TrainConfig; errors: ConfigError[] } {
  if (!input || typeof input !== 'object' || Array.isArray(input)) return { config: DEFAULT_CONFIG, errors: [{ path: '', message: `A training config is a JSON object, got ${shown(input)}.` }] };
  const errors: ConfigError[] = [];
  unknownKeys(input, DEFAULT_CONFIG, '', errors, true);
  const sections: Record<string, unknown> = {};
  const flat: [string, unknown][] = [];
  for (const [k, v] of Object.entries(input)) {
    if (k in TRL_NAMES) flat.push([k, v]);
    else if (k in DEFAULT_CONFIG && !errors.some((x) => x.path === k)) sections[k] = v;
  }
  let config = mergeConfig(DEFAULT_CONFIG, sections as DeepPartial<TrainConfig>);
  for (const [k, v] of flat) {
    const path = TRL_NAMES[k];
    if (get(sections, path) !== undefined) errors.push({ path, message: `"${k}" and "${path}" both set ${path}: keep one.` });
    const [s, f] = path.split('.');
    config = mergeConfig(config, { [s]: { [f]: v } } as DeepPartial<TrainConfig>);
  }
  errors.push(...validate(config, ctx).filter((x) => !errors.some((y) => y.path === x.path)));
  return { config, errors };
}

/** Errors keyed by path (the studio's form shows one message per field: the first). */
export function errorsByPath(errors: ConfigError[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const x of errors) out[x.path] ??= x.message;
  return out;
}

/** One line per problem, "path: message", under a heading naming where the config came from. */
export function formatErrors(errors: ConfigError[], where = 'the training config'): string {
  return `${where} has ${errors.length} problem${errors.length === 1 ? '' : 's'}:\n${errors.map((x) => `  ${x.path || '(config)'}: ${x.message}`).join('\n')}`;
}

/** The studio's form errors: field path → message, empty when the config can be trained. */
export function validateConfig(c: TrainConfig, ctx: ValidateContext = {}): Record<string, string> {
  return errorsByPath(validate(c, ctx));
}
