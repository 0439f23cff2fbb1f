// The Playground: one question about one image (from a dataset, or a file from disk), answered by
// the model with the adapter on, off, or both (one after the other, each streaming into its own
// pane). Tokens arrive through a comlink-proxied callback (Engine.generate's onToken) with the
// settled text and its boxes, already mapped to original pixels by the engine; Stop cancels the
// answer in flight (Engine.cancelGenerate) and skips the one not begun. Kept in a store so switching
// screens does not lose the answers.
import { create } from 'zustand';
import type { GenerateStream } from '../worker/api.ts';
import { callback } from '../worker/client.ts';
import { imageBlobs } from './dataset.ts';
import { useRuns } from './runs.ts';
import { trainer, useRuntime } from './runtime.ts';
import { modelSpec } from './training.ts';
import type { TrainConfig } from './runConfig.ts';
import { modelDefaults, samplingOptions, samplingProblems, TRANSFORMERS_DEFAULTS, type ModelDefaults, type Sampling } from './playgroundSettings.ts';

export type Side = 'adapter' | 'base';
export type Mode = Side | 'both';

/** The image asked about: a dataset image (by id) or a file; sizes are the original pixels boxes are drawn in. */
export type PlaygroundImage =
  | { kind: 'dataset'; imageId: string; name: string; width: number; height: number; minPixels: number; maxPixels: number }
  | { kind: 'file'; file: Blob; url: string; name: string; width: number; height: number; minPixels: number; maxPixels: number };

export interface Answer {
  status: 'waiting' | 'streaming' | 'done' | 'stopped' | 'skipped' | 'error';
  text: string;
  /** bbox_2d boxes in original pixels */
  boxes: GenerateStream['boxes'];
  tokens: number;
  ms?: number;
  error?: string;
}

interface PlaygroundState {
  image: PlaygroundImage | null;
  question: string;
  mode: Mode;
  /** '' = no adapter chosen yet (the adapter on the model now), or a run id */
  runId: string;
  sampling: Sampling;
  /** the model's defaults (its generation_config.json over transformers'): what Reset restores */
  defaults: ModelDefaults;
  /** the sampling settings were changed by hand: new model defaults leave them alone */
  edited: boolean;
  running: boolean;
  stopping: boolean;
  /** which adapter answered ("run …, step N", "imported: …") */
  adapterLabel: string;
  answers: Partial<Record<Side, Answer>>;
  error?: string;
}

export const usePlayground = create<PlaygroundState>(() => ({
  image: null, question: '', mode: 'both', runId: '', sampling: { ...TRANSFORMERS_DEFAULTS.sampling }, defaults: TRANSFORMERS_DEFAULTS, edited: false, running: false, stopping: false, adapterLabel: '', answers: {},
}));
const set = usePlayground.setState;
const get = usePlayground.getState;

export function setImage(image: PlaygroundImage | null): void {
  const old = get().image;
  if (old?.kind === 'file' && old !== image) URL.revokeObjectURL(old.url);
  set({ image, answers: {}, error: undefined });
}

export function setSampling(patch: Partial<Sampling>): void {
  set({ sampling: { ...get().sampling, ...patch }, edited: true });
}

/** Reset: the model's defaults. */
export function resetSampling(): void {
  set({ sampling: { ...get().defaults.sampling }, edited: false });
}

/**
 * The chosen model's defaults (Engine.generationConfig: its generation_config.json, as
 * transformers' generate() starts from it); the form takes them unless it was edited by hand.
 */
export async function loadModelDefaults(config: TrainConfig): Promise<void> {
  const api = trainer();
  const key = JSON.stringify(config.model); // hub id, revision, endpoint, local folder name
  if (!api || !useRuntime.getState().methods.includes('generationConfig') || key === wantedDefaults) return;
  wantedDefaults = key;
  let defaults: ModelDefaults;
  try {
    defaults = modelDefaults(await api.generationConfig(await modelSpec(config)));
  } catch (e) {
    defaults = { ...TRANSFORMERS_DEFAULTS, warnings: [`generation_config.json could not be read (${(e as Error).message}): transformers' defaults are used.`] };
  }
  if (key !== wantedDefaults) return; // another model was chosen meanwhile
  set({ defaults, ...(get().edited ? {} : { sampling: { ...defaults.sampling } }) });
}
let wantedDefaults = '';

/** Why Train, Resume and Predictions wait while an answer streams (the engine refuses them too). */
export const PLAYGROUND_BUSY = 'the Playground is answering: stop the answer first (Stop on the Playground screen) or wait for it to end';

export const sidesOf = (mode: Mode): Side[] => (mode === 'both' ? ['adapter', 'base'] : [mode]);

/** Why Ask is disabled (beyond the engine's state), or undefined. */
export function askProblem(s: Pick<PlaygroundState, 'image' | 'question' | 'sampling' | 'running'>): string | undefined {
  if (s.running) return 'answering…';
  if (!s.image) return 'choose an image: from the dataset, or a file from disk';
  if (!s.question.trim()) return 'type a question';
  const p = Object.values(samplingProblems(s.sampling));
  return p.length ? p.join(' ') : undefined;
}

const patchAnswer = (side: Side, a: Partial<Answer>) => {
  const answers = get().answers;
  set({ answers: { ...answers, [side]: { ...(answers[side] ?? { status: 'waiting', text: '', boxes: [], tokens: 0 }), ...a } } });
};

export async function ask(config: TrainConfig): Promise<void> {
  const api = trainer();
  const s = get();
  if (!api || askProblem(s)) return;
  const image = s.image!, question = s.question.trim(), sides = sidesOf(s.mode);
  set({ running: true, stopping: false, error: undefined, adapterLabel: '', answers: Object.fromEntries(sides.map((side) => [side, { status: 'waiting', text: '', boxes: [], tokens: 0 }])) });
  try {
    if (sides.includes('adapter')) {
      const a = await api.useAdapter(s.runId ? { kind: 'run', runId: s.runId } : { kind: 'current' });
      if (a.label === 'none') throw new Error('The model has no adapter: train a run or import one (Export screen), or ask with the adapter off.');
      const name = a.runId ? (useRuns.getState().runs.find((r) => r.id === a.runId)?.name ?? a.label) : a.label;
      set({ adapterLabel: a.step !== undefined ? `${name}, step ${a.step}` : name });
    } else if (!(await api.modelInfo())) {
      await api.loadModel(await modelSpec(config), null);
    }
    const blob = image.kind === 'file' ? image.file : (await imageBlobs(image.imageId).catch(() => undefined))?.image;
    if (!blob) throw new Error(`The image "${image.name}" is missing from storage.`);
    const opts = { ...samplingOptions(s.sampling), minPixels: image.minPixels, maxPixels: image.maxPixels, original: [{ width: image.width, height: image.height }] };
    for (const side of sides) {
      if (get().stopping) {
        patchAnswer(side, { status: 'skipped' });
        continue;
      }
      patchAnswer(side, { status: 'streaming' });
      try {
        const onToken = callback((e: GenerateStream) => {
          if (get().answers[side]?.status === 'streaming') patchAnswer(side, { text: e.text, boxes: e.boxes, tokens: e.tokens });
        });
        const r = await api.generate([blob], question, { ...opts, adapter: side === 'adapter' }, onToken);
        patchAnswer(side, { status: r.stopped ? 'stopped' : 'done', text: r.text, boxes: r.boxes, tokens: r.tokens, ms: r.ms });
      } catch (e) {
        patchAnswer(side, { status: 'error', error: (e as Error).message });
      }
    }
  } catch (e) {
    set({ error: (e as Error).message });
    for (const side of sides) if (get().answers[side]?.status === 'waiting') patchAnswer(side, { status: 'skipped' });
  } finally {
    set({ running: false, stopping: false });
  }
}

/** Stop: the answer streaming now ends after its current token; one not begun is skipped. */
export async function stopAsking(): Promise<void> {
  if (!get().running) return;
  set({ stopping: true });
  await trainer()?.cancelGenerate();
}
