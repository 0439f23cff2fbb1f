// npm run train -- --model <hub id|folder|tiny> --data <file.jsonl|file.json|synthetic[:N]> [--method sft|dpo|grpo|ppo]
//                  [--config <json>] [--out <dir>] [--endpoint <url>] [--revision <rev>] [--steps N]
//                  [--resume] [--run <id>] [--skip-invalid] [--recompute] [--quantize nf4] [--no-quantize-vision]
//                  [--eval-split F | --eval-data <file.jsonl>]
// Headless training on Node + Dawn, a thin front end over src/session (the same assembly as the
// studio's worker): flags and --config are validated by src/config (typos name the nearest key),
// every record is checked before the model loads (all problems at once; --skip-invalid trains on the
// rest), checkpoints every optim.saveSteps steps, one progress line per step, and a PEFT adapter
// (adapter_model.safetensors + adapter_config.json, base_model_name_or_path set).
// --out DIR is the run's folder: DIR/checkpoints/ (fileKV: CRC-checked, temp files swept at start)
// and DIR/adapter (written by writeFilesAtomic: a link to a complete version folder, swapped in one
// rename, so a kill or a full disk leaves the previous adapter intact). Images are decoded by
// data/image.ts decodeImageFile (EXIF orientation, PIL's pixel limit from the header) and their
// paths resolved by the parser through data/formats/paths.ts resolveImagePath (nothing outside the
// dataset's folder).
// Evaluation: --eval-split F holds out images of --data (session/split.ts: by image, seeded by
// optim.seed; F < 1 a fraction, else a count), --eval-data FILE reads a separate dataset with the
// same parser and checks. The held-out examples are evaluated (session/eval.ts) every eval.evalSteps
// steps and at the end; one "eval" line each. DIR/metrics.jsonl gets one JSON object per logged step
// (train metrics, then eval metrics, trl's names, each with `step`), appended as they come; with
// --resume the file is continued and steps it already holds are not written again.
import { existsSync, statSync } from 'node:fs';
import { appendFile, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { homedir } from 'node:os';
import { pathToFileURL } from 'node:url';
import { nodeGpu, closeGpu } from '../gpu/node.ts';
import { dirCache, dirSource } from '../model/sources/node.ts';
import { decodeImageFile } from '../data/image.ts';
import { fileKV, writeFilesAtomic } from './files.ts';
import { METHODS, type Method, type TrainConfig } from '../config/config.ts';
import { formatErrors, nearestKey, parseConfig, validate, type ConfigError } from '../config/validate.ts';
import { baseModelId, loadModel, loraConfigOf, quantizeOptions, readTokenizer, sourceOf, type ModelHost, type ModelSpec } from '../session/model.ts';
import { ExampleProblems, prepareExamples, sampledTokens, takesRecord, type ExampleProblem, type ExampleSource, type PreparedExamples } from '../session/examples.ts';
import { imageCount, splitByImage } from '../session/split.ts';
import { datasetSources, syntheticSources } from '../session/dataset.ts';
import { Run } from '../session/run.ts';
import { modelAdapterFiles } from '../export/peft.ts';
import { loadNewestValidCheckpoint } from '../train/checkpoint.ts';
import { TrainingFault } from '../train/trainer.ts';

/** Flags that take a value, and flags that are switches. */
const VALUE_FLAGS = ['model', 'data', 'method', 'config', 'out', 'endpoint', 'revision', 'steps', 'run', 'quantize', 'eval-split', 'eval-data'] as const;
const SWITCHES = ['resume', 'skip-invalid', 'recompute', 'no-quantize-vision', 'help'] as const;
type Flags = Partial<Record<(typeof VALUE_FLAGS)[number], string> & Record<(typeof SWITCHES)[number], boolean>>;

export const USAGE = `usage: npm run train -- --model <hub id|folder|tiny> --data <file.jsonl|file.json|synthetic[:N]> [--method ${METHODS.join('|')}]
  [--config <json>] [--out <dir>] [--endpoint <url>] [--revision <rev>] [--steps N] [--resume] [--run <id>] [--skip-invalid] [--recompute]
  [--quantize nf4] (4-bit NF4 base, QLoRA) [--no-quantize-vision] (with nf4: keep the vision tower BF16)
  [--eval-split F] (hold out images of --data: F < 1 a fraction, else a count) | [--eval-data <file.jsonl>] (a separate eval set)
    evaluated every eval.evalSteps steps and at the end; every logged step is appended to DIR/metrics.jsonl
  --out DIR (default out): the run's folder; checkpoints in DIR/checkpoints, the PEFT adapter in DIR/adapter
    (adapter_config.json + adapter_model.safetensors, replaced atomically; DIR/adapter is a link to a version folder)`;

/** A mistake in what the user passed: printed with no stack, exit code 2. */
export class UsageError extends Error {}

/** Strict flags: unknown ones, missing values and stray words are errors that list the valid flags. */
export function parseFlags(argv: string[]): Flags {
  const out: Record<string, string | boolean> = {};
  const all = [...VALUE_FLAGS, ...SWITCHES].map((f) => `--${f}`);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new UsageError(`unexpected argument "${a}" (flags start with --; valid flags: ${all.join(' ')})`);
    const [name, inline] = a.slice(2).split(/=(.*)/s, 2);
    if (name in out) throw new UsageError(`--${name} given twice`);
    if ((VALUE_FLAGS as readonly string[]).includes(name)) {
      const v = inline ?? argv[++i];
      if (v === undefined || (inline === undefined && v.startsWith('--'))) throw new UsageError(`--${name} needs a value`);
      out[name] = v;
    } else if ((SWITCHES as readonly string[]).includes(name)) {
      if (inline !== undefined) throw new UsageError(`--${name} is a switch and takes no value`);
      out[name] = true;
    } else {
      const near = nearestKey(name, [...VALUE_FLAGS, ...SWITCHES]);
      throw new UsageError(`unknown flag --${name}${near ? `: did you mean --${near}?` : ''} (valid flags: ${all.join(' ')})`);
    }
  }
  return out as Flags;
}

export interface Io {
  log(line: string): void;
  error(line: string): void;
}

/** The model spec a --model value names: tiny, a folder on disk, or a hub id. */
function modelSpec(model: string, flags: Flags): ModelSpec {
  if (model === 'tiny') return { source: 'tiny' };
  if (existsSync(model)) {
    if (!statSync(model).isDirectory()) throw new UsageError(`--model ${model} is a file; pass the model's folder (config.json, tokenizer.json, *.safetensors)`);
    return { source: 'folder', path: resolve(model) };
  }
  if (!/^[\w.-]+\/[\w.-]+$/.test(model)) throw new UsageError(`--model ${model}: no such folder, and not a hub id (owner/name)`);
  return { source: 'hub', repo: model, endpoint: flags.endpoint, revision: flags.revision };
}

/** THE config from --config and the flags; every problem at once. */
async function configOf(flags: Flags): Promise<{ config: TrainConfig; errors: ConfigError[]; where: string }> {
  let input: Record<string, unknown> = {};
  const where = flags.config ? `--config ${flags.config}` : 'the flags';
  if (flags.config) {
    let text: string;
    try {
      text = await readFile(flags.config, 'utf8');
    } catch (e) {
      throw new UsageError(`--config ${flags.config}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    try {
      input = JSON.parse(text);
    } catch (e) {
      throw new UsageError(`--config ${flags.config} is not JSON: ${(e as Error).message}`);
    }
  }
  const { config, errors } = parseConfig(input);
  if (flags.method) {
    if (!(METHODS as readonly string[]).includes(flags.method)) errors.push({ path: 'method', message: `--method ${flags.method}: expected one of ${METHODS.join(', ')}` });
    else config.method = flags.method as Method;
  }
  if (flags.steps !== undefined) {
    const n = Number(flags.steps);
    if (!/^\d+$/.test(flags.steps.trim()) || !(n >= 1)) errors.push({ path: 'optim.maxSteps', message: `--steps ${flags.steps}: expected a whole number of optimizer steps ≥ 1` });
    else config.optim = { ...config.optim, maxSteps: n };
  }
  // --quantize / --no-quantize-vision set model.quantize / model.quantizeVision (validated as the config is)
  if (flags.quantize !== undefined) {
    if (flags.quantize !== 'nf4' && flags.quantize !== 'none') errors.push({ path: 'model.quantize', message: `--quantize ${flags.quantize}: only "nf4" (a 4-bit NF4 base, QLoRA) or "none" is supported; fp4, int8, GPTQ and AWQ are not` });
    else config.model = { ...config.model, quantize: flags.quantize };
  }
  if (flags['no-quantize-vision']) config.model = { ...config.model, quantizeVision: false };
  if (flags['eval-split'] !== undefined) {
    const f = Number(flags['eval-split']);
    if (!flags['eval-split'].trim() || !Number.isFinite(f)) errors.push({ path: 'eval.evalSplit', message: `--eval-split ${flags['eval-split']}: expected a fraction of the images (0 < F < 1) or a whole number of images` });
    else config.eval = { ...config.eval, evalSplit: f };
  }
  if (flags['eval-data'] !== undefined && config.eval.evalSplit > 0) errors.push({ path: 'eval.evalSplit', message: `--eval-data ${flags['eval-data']} and an eval split of ${config.eval.evalSplit} both name the eval set: keep one` });
  return { config, errors, where };
}

export async function trainCli(argv: string[], io: Io = { log: console.log, error: console.error }): Promise<number> {
  const flags = parseFlags(argv);
  if (flags.help) {
    io.log(USAGE);
    return 0;
  }
  if (!flags.model || !flags.data) throw new UsageError(`${!flags.model ? '--model' : '--data'} is required\n${USAGE}`);
  const spec = modelSpec(flags.model, flags);
  const { config, errors, where } = await configOf(flags);
  config.model = spec.source === 'hub' ? { ...config.model, source: 'hub', hubId: spec.repo, endpoint: spec.endpoint ?? config.model.endpoint, revision: spec.revision ?? config.model.revision }
    : spec.source === 'folder' ? { ...config.model, source: 'local', local: { name: spec.path, files: await readdir(spec.path) } } : { ...config.model, source: 'tiny' };
  // the model the flags name is checked like the rest (a folder without tokenizer.json or weights)
  for (const e of validate(config)) if (e.path.startsWith('model') && !errors.some((x) => x.path === e.path)) errors.push(e);
  if (errors.length) throw new UsageError(formatErrors(errors, where));

  const out = resolve(flags.out ?? 'out');
  const adapterDir = join(out, 'adapter');
  const runId = flags.run ?? 'cli';
  const kv = fileKV(join(out, 'checkpoints'));
  for (const f of await kv.sweep()) io.error(`removed ${f}, the temp file of a killed checkpoint write`);
  if (flags.resume && !(await loadNewestValidCheckpoint(kv, runId))) {
    throw new UsageError(`--resume: nothing to resume: ${join(out, 'checkpoints')} holds no checkpoint of run "${runId}". Run without --resume to start (or pass the --out / --run of the earlier run).`);
  }

  // the data, checked in full before the GPU or the weights are touched
  const host: ModelHost = { folder: (p) => dirSource(p), hubCache: dirCache(join(homedir(), '.cache', 'patchwork', 'hub')) };
  const source = await sourceOf(spec, host);
  const tokenizer = await readTokenizer(spec, source, host);
  /** A --data / --eval-data value's records (synthetic:N, or a JSONL/JSON file read by the dataset parser) and the file's problems. */
  const readSources = async (data: string, flag: string): Promise<{ sources: ExampleSource[]; problems: ExampleProblem[] }> => {
    const syn = /^synthetic(?::(\d+))?$/.exec(data);
    if (syn) return { sources: syntheticSources(config.method, Number(syn[1] ?? 8)), problems: [] };
    const file = resolve(data);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new UsageError(`--${flag} ${data}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    // the parser has already resolved each image path against the JSONL's folder and refused the
    // ones that leave it (data/formats/paths.ts resolveImagePath): what arrives here is safe to read
    const read = (path: string) => readFile(path);
    const decode = (bytes: Uint8Array, name: string) => decodeImageFile(bytes, name, { onWarning: (w) => io.error(`warning: ${w}`) });
    const ds = await datasetSources(text, data, { read, decode }, config.data);
    for (const w of ds.warnings) io.error(`warning: ${w}`);
    return { sources: ds.sources, problems: ds.problems };
  };
  // every record checked; the problems of the file and of the checks reported together
  const maxNewTokens = sampledTokens(config);
  const prepare = (sources: ExampleSource[], fileProblems: ExampleProblem[], name: string, flag: string): PreparedExamples => {
    let prepared: PreparedExamples | undefined;
    let problems = fileProblems;
    try {
      prepared = prepareExamples(sources, { method: config.method, data: config.data, maxNewTokens, tokenizer, skipInvalid: true, name });
      problems = [...fileProblems, ...prepared.problems];
    } catch (e) {
      if (e instanceof ExampleProblems) problems = [...fileProblems, ...e.problems];
      else if (!fileProblems.length) throw new UsageError((e as Error).message);
    }
    const lineOf = (w: string) => Number(/line (\d+)$/.exec(w)?.[1] ?? 0);
    problems.sort((a, b) => lineOf(a.where) - lineOf(b.where));
    if (problems.length && (!flags['skip-invalid'] || !prepared)) {
      const n = problems.length;
      throw new UsageError(`${n} record${n > 1 ? 's' : ''} of ${name} cannot be ${flag === 'data' ? 'trained' : 'evaluated'} on; fix ${n > 1 ? 'them' : 'it'}, or pass --skip-invalid to ${flag === 'data' ? 'train' : 'evaluate'} on the rest:\n${problems.map((p) => `  ${p.where}: ${p.message}`).join('\n')}`);
    }
    for (const p of problems) io.error(`skipped ${p.where}: ${p.message}`);
    if (!prepared) throw new UsageError(`${name}: nothing to ${flag === 'data' ? 'train' : 'evaluate'} on`);
    if (prepared.otherKind) io.error(`warning: ${prepared.otherKind} record${prepared.otherKind > 1 ? 's' : ''}${flag === 'data' ? '' : ` of ${name}`} of another kind than ${config.method.toUpperCase()} takes ${prepared.otherKind > 1 ? 'were' : 'was'} left out`);
    return prepared;
  };
  const data = await readSources(flags.data, 'data');
  // the eval split, by image among the records the method takes (validated first: it must leave images on both sides)
  const taken = data.sources.filter((s) => takesRecord(s.record, config.method));
  const datasetImages = imageCount(taken);
  const splitErrors = validate(config, { datasetImages, modelSource: false }).filter((e) => e.path === 'eval.evalSplit');
  if (splitErrors.length) throw new UsageError(formatErrors(splitErrors, `${where} with ${flags.data}`));
  const split = splitByImage(taken, config.eval, config.optim.seed);
  const others = data.sources.filter((s) => !takesRecord(s.record, config.method));
  const prepared = prepare(split.eval.length ? [...split.train, ...others] : data.sources, data.problems, flags.data, 'data');
  let evalPrepared: PreparedExamples | undefined;
  if (split.eval.length) evalPrepared = prepare(split.eval, [], `the eval split of ${flags.data}`, 'eval-split');
  else if (flags['eval-data']) {
    const ev = await readSources(flags['eval-data'], 'eval-data');
    evalPrepared = prepare(ev.sources, ev.problems, flags['eval-data'], 'eval-data');
  }
  const dataErrors = validate(config, { datasetSize: prepared.examples.length, datasetImages, modelSource: false });
  if (dataErrors.length) throw new UsageError(formatErrors(dataErrors, `${where} with ${prepared.examples.length} examples`));

  const g = await nodeGpu();
  io.log(`adapter: ${g.adapterName}`);
  const lora = loraConfigOf(config.lora, baseModelId(spec));
  const loaded = await loadModel(spec, host, { lora, loraSeed: config.optim.seed, recompute: !!flags.recompute, plan: prepared.plan, tokenizer, ...quantizeOptions(config) });
  for (const w of loaded.model.warnings) io.error(`warning: ${w}`);
  const nf4 = loaded.model.nf4Tensors;
  io.log(nf4 ? `base: NF4 (${nf4} weights 4-bit${config.model.quantize === 'nf4' ? `, vision tower ${config.model.quantizeVision ? 'included' : 'BF16'}` : ', a bitsandbytes 4-bit checkpoint'}); adapter base_model_name_or_path ${baseModelId(spec)}` : 'base: BF16');
  const run = new Run({ runId, config, model: loaded.model, tokenizer, examples: prepared.examples, kv, evalExamples: evalPrepared?.examples });
  run.onCheckpoint = (step) => io.log(`checkpoint at step ${step} in ${join(out, 'checkpoints')}`);
  if (flags.resume) {
    const r = await run.resume();
    if (r?.message) io.error(`warning: ${r.message}`);
    io.log(`resumed at step ${r?.step ?? 0}`);
  }
  const metrics = await metricsLog(join(out, 'metrics.jsonl'), !!flags.resume);
  const evalN = evalPrepared?.examples.length ?? 0;
  io.log(`${config.method} on ${prepared.examples.length} examples, ${run.totalSteps} steps${run.saveEvery ? `, a checkpoint every ${run.saveEvery}` : ''}` +
    (evalN ? `; evaluating ${evalN} held-out examples${split.eval.length ? ` (${split.evalImages.length} of ${datasetImages} images)` : ''} ${config.eval.evalSteps > 0 ? `every ${config.eval.evalSteps} steps and ` : ''}at the end` : ''));
  try {
    while (!run.done) {
      const m = await run.trainStep();
      const extra = Object.entries(m).filter(([k]) => k.includes('/') || k === 'mean_token_accuracy' || k === 'reward').map(([k, v]) => `${k} ${v.toFixed(4)}`).join('  ');
      io.log(`step ${m.step}/${run.totalSteps}  epoch ${m.epoch.toFixed(2)}  loss ${m.loss.toFixed(4)}  lr ${m.learning_rate.toExponential(2)}  grad_norm ${m.grad_norm.toPrecision(3)}  tok/s ${m.tokens_per_s.toFixed(0)}  ${extra}`);
      await metrics.append('train', { ...m });
      if (run.evalDue) {
        const r = await run.evaluate();
        io.log(evalLine(r.step, r.metrics));
        await metrics.append('eval', { step: r.step, ...r.metrics });
      }
    }
    await run.save();
  } catch (e) {
    if (e instanceof TrainingFault) {
      // checkpoints after the fault's last good step are deleted, so --resume continues from a good one
      const kept = await run.rollback(e);
      io.error(`${e.message}${kept !== null ? ` (last good checkpoint: step ${kept}; --resume continues from it)` : ''}`);
      return 1;
    }
    throw e;
  } finally {
    run.dispose();
  }
  await writeFilesAtomic(adapterDir, await modelAdapterFiles(loaded.model));
  loaded.model.dispose();
  io.log(`wrote ${join(adapterDir, 'adapter_model.safetensors')} and adapter_config.json`);
  return 0;
}

/** One eval line: loss, the grounding metrics, and the method's (DPO accuracies / margins, RL reward). */
export function evalLine(step: number, m: Record<string, number>): string {
  const f = (k: string, label: string) => (m[k] === undefined ? '' : `  ${label} ${m[k].toFixed(4)}`);
  return `eval at step ${step}:` + f('eval_loss', 'loss') + f('eval_mean_token_accuracy', 'mean_token_accuracy') + f('eval_rewards/accuracies', 'rewards/accuracies') +
    f('eval_rewards/margins', 'rewards/margins') + f('eval_reward', 'reward') + f('eval_grounding/parse_rate', 'parse rate') + f('eval_grounding/mean_iou', 'mean IoU') +
    f('eval_grounding/acc_iou50', 'acc@0.5') + f('eval_grounding/acc_iou75', 'acc@0.75');
}

/**
 * OUT/metrics.jsonl, append-only: one JSON object per logged step. A fresh run starts the file anew;
 * a resumed one continues it, skipping the (kind, step) records it already holds (the steps re-run
 * after the checkpoint reproduce them), so no step appears twice.
 */
async function metricsLog(path: string, resume: boolean): Promise<{ append(kind: 'train' | 'eval', rec: Record<string, number>): Promise<void> }> {
  const seen = new Set<string>();
  const keyOf = (r: Record<string, unknown>) => `${Object.keys(r).some((k) => k.startsWith('eval_')) ? 'eval' : 'train'}:${r.step}`;
  if (resume && existsSync(path)) {
    const text = await readFile(path, 'utf8');
    // a last line cut short by a kill is ended, so the next record starts a line of its own
    if (text && !text.endsWith('\n')) await appendFile(path, '\n');
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      try {
        seen.add(keyOf(JSON.parse(line)));
      } catch {
        // a line cut short by a kill: the record is written again when its step comes
      }
    }
  } else {
    await mkdir(join(path, '..'), { recursive: true });
    await writeFile(path, '');
  }
  return {
    async append(kind, rec) {
      const key = `${kind}:${rec.step}`;
      if (seen.has(key)) return;
      seen.add(key);
      await appendFile(path, JSON.stringify(rec) + '\n');
    },
  };
}

async function main(): Promise<void> {
  let code: number;
  try {
    code = await trainCli(process.argv.slice(2));
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    code = e instanceof UsageError ? 2 : 1;
  }
  await closeGpu();
  process.exit(code);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) void main();

