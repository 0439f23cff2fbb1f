// What the Train panel says about the settings before a run: errors by field path (they block Train)
// and warnings by field path (absurd but legal values: shown next to the field, never blocking).
// Pure functions, so they are unit-tested without a browser.
import type { TrainConfig } from '../store/runConfig.ts';
import { validateConfig } from '../config/validate.ts';

/** What is known about the run's data and speed when the form is shown (all optional). */
export interface TrainContext {
  /** trainable examples of the chosen dataset for the chosen method */
  datasetSize?: number;
  /** images holding those examples (what the eval split divides, by image) */
  datasetImages?: number;
  /** seconds per optimizer step: measured on this machine, else the engine's estimate */
  secondsPerStep?: number;
}

export type FieldMessages = Record<string, string>;

/**
 * Form errors by field path ("optim.maxSteps" → message): THE training-config validation
 * (config/validate.ts, the first message of each field), the one the CLI's --config and the cluster
 * export use, with the dataset rules (batch and steps against the examples) once the size is known.
 */
export function formErrors(config: TrainConfig, ctx: TrainContext = {}): FieldMessages {
  return validateConfig(config, ctx.datasetSize ? { datasetSize: ctx.datasetSize, ...(ctx.datasetImages ? { datasetImages: ctx.datasetImages } : {}) } : {});
}

/** A validate result as field path → message: accepts a record, or a list of { path, message }. */
export function byPath(errors: FieldMessages | readonly { path: string | readonly (string | number)[]; message: string }[]): FieldMessages {
  if (!Array.isArray(errors)) return { ...(errors as FieldMessages) };
  const out: FieldMessages = {};
  for (const e of errors as readonly { path: string | readonly (string | number)[]; message: string }[]) {
    const p = typeof e.path === 'string' ? e.path : e.path.join('.');
    out[p] = out[p] ? `${out[p]} ${e.message}` : e.message;
  }
  return out;
}

/** Optimizer steps of a run: max steps when set, else epochs over the examples (undefined when unknown). */
export function plannedSteps(o: TrainConfig['optim'], datasetSize?: number): number | undefined {
  if (o.maxSteps > 0) return o.maxSteps;
  if (!datasetSize || !(o.numEpochs > 0)) return undefined;
  return Math.ceil((datasetSize * o.numEpochs) / Math.max(1, o.batchSize * o.gradAccumSteps));
}

export const MAX_SANE_STEPS = 100_000;
/** passes over the data beyond which a LoRA run only memorises (trl / ms-swift recipes use 1-10) */
export const MAX_SANE_EPOCHS = 200;
/** a run longer than this at the known step time is called out */
export const LONG_RUN_S = 24 * 3600;

const n = (v: number) => Math.round(v).toLocaleString('en-US');

export function fmtLong(sec: number): string {
  if (sec < 5400) return `${Math.round(sec / 60)} min`;
  if (sec < 48 * 3600) return `${(sec / 3600).toFixed(1)} h`;
  const days = sec / 86400;
  return days < 100 ? `${days.toFixed(1)} days` : `${n(days)} days`;
}

/** Warnings by field path for legal but absurd step counts. Fields with an error get no warning. */
export function trainWarnings(config: TrainConfig, ctx: TrainContext = {}, errors: FieldMessages = {}): FieldMessages {
  const w: FieldMessages = {};
  const o = config.optim;
  const size = ctx.datasetSize;
  const perStep = Math.max(1, o.batchSize * o.gradAccumSteps);
  if (o.maxSteps > MAX_SANE_STEPS) {
    w['optim.maxSteps'] = `${n(o.maxSteps)} steps is far beyond what a LoRA run needs (hundreds to a few thousand); check the number.`;
  } else if (o.maxSteps > 0 && size) {
    const passes = (o.maxSteps * perStep) / size;
    if (passes > MAX_SANE_EPOCHS) {
      w['optim.maxSteps'] = `${n(o.maxSteps)} steps × ${perStep} sample${perStep > 1 ? 's' : ''} = ${n(passes)} passes over the ${n(size)} example${size > 1 ? 's' : ''} (epochs × dataset size would be ${n(Math.ceil((o.numEpochs * size) / perStep))} steps): the model will only memorise them.`;
    }
  }
  if (o.maxSteps === 0 && o.numEpochs > MAX_SANE_EPOCHS) {
    w['optim.numEpochs'] = `${n(o.numEpochs)} epochs is far more than LoRA needs (1–10); the model will only memorise the data.`;
  }
  const steps = plannedSteps(o, size);
  if (steps !== undefined && ctx.secondsPerStep && steps * ctx.secondsPerStep > LONG_RUN_S) {
    const field = o.maxSteps > 0 ? 'optim.maxSteps' : 'optim.numEpochs';
    const t = `≈ ${fmtLong(steps * ctx.secondsPerStep)} at ${ctx.secondsPerStep < 10 ? ctx.secondsPerStep.toFixed(1) : n(ctx.secondsPerStep)} s a step (${n(steps)} steps).`;
    w[field] = w[field] ? `${w[field]} ${t}` : `This run takes ${t}`;
  }
  if (steps !== undefined && o.warmupSteps > 0 && o.warmupSteps >= steps / 2 && !errors['optim.warmupSteps']) {
    w['optim.warmupSteps'] = `Warmup (${n(o.warmupSteps)} steps) is half the run (${n(steps)}) or more: the rate barely reaches its peak.`;
  }
  const ev = config.eval;
  if (ev.evalSplit > 0 && steps !== undefined && ev.evalSteps > steps) {
    w['eval.evalSteps'] = `Every ${n(ev.evalSteps)} steps is longer than the run (${n(steps)} steps): the held-out split is evaluated at the end only.`;
  }
  for (const k of Object.keys(w)) if (errors[k]) delete w[k];
  return w;
}
