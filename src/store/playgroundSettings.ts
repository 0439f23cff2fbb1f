// The Playground's sampling settings: their defaults (and where each comes from), the checks that
// refuse a bad value (a sentence naming the field, or null), and the generate() options they give.
// Pure: no React, no worker.
import type { GenerateOptions, GenerationDefaults } from '../worker/api.ts';

export interface Sampling {
  /** greedy decoding (argmax); false = sample with temperature → top-k → top-p */
  greedy: boolean;
  temperature: number;
  /** 0 = all tokens */
  topK: number;
  /** 1 = all tokens */
  topP: number;
  maxNewTokens: number;
  /** seeds the sampler's RNG: the same seed, settings, image and question give the same answer */
  seed: number;
  /** transformers' repetition_penalty (1: off), applied greedy or sampled */
  repetitionPenalty: number;
}

/**
 * Defaults, each as transformers' GenerationConfig or our generate code sets it:
 * - greedy: GenerationConfig do_sample=False (and the tiny model's generation_config.json);
 *   model/generate.ts is greedy without a temperature too;
 * - temperature 1.0, top_k 50, top_p 1.0: GenerationConfig's defaults, used once sampling is on
 *   (model/generate.ts itself defaults to top-k off, 0; top-p 1 is the same);
 * - max new tokens 128: Engine.generate's default (GenerationConfig's max_length 20 counts the
 *   prompt, which alone is longer here);
 * - seed 0: model/generate.ts's default seed;
 * - repetition penalty 1.0 (off): GenerationConfig's default.
 */
export const SAMPLING_DEFAULTS: Sampling = { greedy: true, temperature: 1.0, topK: 50, topP: 1.0, maxNewTokens: 128, seed: 0, repetitionPenalty: 1.0 };

/** Where each default comes from, as the form says it, when the model has no generation_config.json. */
export const DEFAULT_SOURCES: Record<keyof Sampling, string> = {
  greedy: 'transformers default do_sample=False',
  temperature: 'transformers default',
  topK: 'transformers default',
  topP: 'transformers default',
  maxNewTokens: "the engine's default",
  seed: "our generate's default",
  repetitionPenalty: 'transformers default',
};

export const FROM_FILE = "from the model's generation_config.json";

/** The defaults of a model: its generation_config.json over the ones above, field by field, and what the form says about the file. */
export interface ModelDefaults {
  sampling: Sampling;
  sources: Record<keyof Sampling, string>;
  /** fields of the file left out (bad type, out of range), each naming the file and the field */
  warnings: string[];
  /** settings of the file generation does not apply */
  notApplied: string[];
  /** eos_token_id of the file: generation stops at them (and at the chat turn's end) */
  eosTokenIds?: number[];
}

export const TRANSFORMERS_DEFAULTS: ModelDefaults = { sampling: SAMPLING_DEFAULTS, sources: DEFAULT_SOURCES, warnings: [], notApplied: [] };

/**
 * transformers' generate() starts from the model's generation_config.json: so does the Playground.
 * A value the form would refuse (temperature above 10, more than 4096 new tokens) is left out with
 * a warning, like a bad one in the file.
 */
export function modelDefaults(g: GenerationDefaults): ModelDefaults {
  const sampling = { ...SAMPLING_DEFAULTS }, sources = { ...DEFAULT_SOURCES }, warnings = [...g.warnings];
  const take = <K extends keyof Sampling>(k: K, v: Sampling[K] | undefined, field: string) => {
    if (v === undefined) return;
    const why = samplingProblems({ ...SAMPLING_DEFAULTS, greedy: false, [k]: v })[k];
    if (why) return void warnings.push(`generation_config.json: ${field} ${v} is out of range here (${why.replace(/\.$/, '')}): ignored, the transformers default is used.`);
    sampling[k] = v;
    sources[k] = FROM_FILE;
  };
  if (g.doSample !== undefined) {
    sampling.greedy = !g.doSample;
    sources.greedy = `${FROM_FILE}: do_sample ${g.doSample ? 'true' : 'false'}`;
  }
  take('temperature', g.temperature, 'temperature');
  take('topK', g.topK, 'top_k');
  take('topP', g.topP, 'top_p');
  take('maxNewTokens', g.maxNewTokens, 'max_new_tokens');
  take('repetitionPenalty', g.repetitionPenalty, 'repetition_penalty');
  return { sampling, sources, warnings, notApplied: g.notApplied, ...(g.eosTokenIds ? { eosTokenIds: g.eosTokenIds } : {}) };
}

/** Every problem with the settings, by field (empty when they can run). Only what sampling uses is checked when greedy. */
export function samplingProblems(s: Sampling): Partial<Record<keyof Sampling, string>> {
  const p: Partial<Record<keyof Sampling, string>> = {};
  if (!(Number.isInteger(s.maxNewTokens) && s.maxNewTokens >= 1 && s.maxNewTokens <= 4096)) p.maxNewTokens = 'Max new tokens must be a whole number from 1 to 4096.';
  if (!(s.repetitionPenalty > 0 && s.repetitionPenalty <= 10)) p.repetitionPenalty = 'Repetition penalty must be greater than 0 and at most 10 (1 is off).';
  if (!s.greedy) {
    if (!(s.temperature > 0 && s.temperature <= 10)) p.temperature = 'Temperature must be greater than 0 and at most 10 (greedy decoding is the checkbox).';
    if (!(Number.isInteger(s.topK) && s.topK >= 0)) p.topK = 'Top-k must be a whole number ≥ 0 (0 keeps every token).';
    if (!(s.topP > 0 && s.topP <= 1)) p.topP = 'Top-p must be greater than 0 and at most 1 (1 keeps every token).';
    if (!(Number.isInteger(s.seed) && s.seed >= 0 && s.seed <= 0xffffffff)) p.seed = 'Seed must be a whole number from 0 to 4294967295.';
  }
  return p;
}

/** The generate() options of the settings: greedy has no temperature (so no random number is drawn); a penalty of 1 is none. */
export function samplingOptions(s: Sampling): Pick<GenerateOptions, 'maxNewTokens' | 'temperature' | 'topK' | 'topP' | 'seed' | 'repetitionPenalty'> {
  const penalty = s.repetitionPenalty !== 1 ? { repetitionPenalty: s.repetitionPenalty } : {};
  if (s.greedy) return { maxNewTokens: s.maxNewTokens, ...penalty };
  return { maxNewTokens: s.maxNewTokens, temperature: s.temperature, topK: s.topK, topP: s.topP, seed: s.seed, ...penalty };
}
