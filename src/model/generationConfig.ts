// A model's generation_config.json, as transformers' GenerationConfig reads it: the settings its
// generate() starts from. Checked field by field like every other input: a field of the wrong type
// or out of range is left out with a warning naming the file and the field (its transformers default
// then applies), never an error. Settings this engine does not implement are named, so the page can
// say they are not applied instead of dropping them silently (repetition_penalty is applied:
// model/generate.ts).
import { MissingFileError, type ModelSource } from './sources/source.ts';

export const GENERATION_CONFIG = 'generation_config.json';

export interface GenerationDefaults {
  /** the model has the file (and it is a JSON object) */
  found: boolean;
  /** the fields that passed the checks; absent: not in the file (or ignored), transformers' default applies */
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  maxNewTokens?: number;
  repetitionPenalty?: number;
  /** eos_token_id (an int or a list in the file): generation stops after any of them */
  eosTokenIds?: number[];
  /** fields left out, each naming the file, the field and why */
  warnings: string[];
  /** settings of the file generation here does not apply ("repetition_penalty 1.05 from generation_config.json is not applied") */
  notApplied: string[];
}

/**
 * Settings we do not implement, with the value that means "off" in transformers (null: unset).
 * A file's value other than that is reported as not applied.
 */
const UNSUPPORTED: Record<string, unknown> = {
  num_beams: 1, num_beam_groups: 1, diversity_penalty: 0, length_penalty: 1, early_stopping: false,
  no_repeat_ngram_size: 0, encoder_no_repeat_ngram_size: 0, encoder_repetition_penalty: 1, min_length: 0, min_new_tokens: null,
  typical_p: 1, min_p: null, epsilon_cutoff: 0, eta_cutoff: 0, num_return_sequences: 1, penalty_alpha: null, renormalize_logits: false,
  bad_words_ids: null, force_words_ids: null, suppress_tokens: null, begin_suppress_tokens: null, forced_bos_token_id: null,
  forced_eos_token_id: null, sequence_bias: null, exponential_decay_length_penalty: null, guidance_scale: null, max_time: null,
  stop_strings: null, constraints: null, watermarking_config: null, assistant_model: null, prompt_lookup_num_tokens: null,
};

/** Fields that do not change what is generated here (ids the tokenizer already knows, bookkeeping, output shapes). */
const NEUTRAL = new Set([
  'bos_token_id', 'pad_token_id', 'decoder_start_token_id', 'transformers_version', '_from_model_config', 'use_cache', 'cache_implementation',
  'cache_config', 'return_dict_in_generate', 'output_attentions', 'output_hidden_states', 'output_scores', 'output_logits', 'return_legacy_cache',
]);

/** The fields read above. */
const HANDLED = new Set(['do_sample', 'temperature', 'top_k', 'top_p', 'max_new_tokens', 'repetition_penalty', 'eos_token_id']);

/** transformers' GenerationConfig default of max_length (it counts the prompt) */
const MAX_LENGTH_DEFAULT = 20;

/** The file's text checked (vocabSize: eos ids must be below it). */
export function parseGenerationConfig(text: string, vocabSize?: number, file = GENERATION_CONFIG): GenerationDefaults {
  const out: GenerationDefaults = { found: false, warnings: [], notApplied: [] };
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    out.warnings.push(`${file} is not valid JSON (${(e as Error).message}): it is ignored, transformers' defaults are used.`);
    return out;
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) {
    out.warnings.push(`${file} is not a JSON object: it is ignored, transformers' defaults are used.`);
    return out;
  }
  out.found = true;
  const o = j as Record<string, unknown>;
  const ignore = (k: string, why: string) => out.warnings.push(`${file}: ${k} ${JSON.stringify(o[k])} ${why}: ignored, the transformers default is used.`);
  const num = (k: string, ok: (v: number) => boolean, range: string): number | undefined => {
    const v = o[k];
    if (v === undefined || v === null) return undefined; // None: the default
    if (typeof v !== 'number' || !ok(v)) return void ignore(k, typeof v !== 'number' ? 'is not a number' : `is out of range (${range})`);
    return v;
  };
  if (o.do_sample !== undefined && o.do_sample !== null) {
    if (typeof o.do_sample === 'boolean') out.doSample = o.do_sample;
    else ignore('do_sample', 'is not true or false');
  }
  out.temperature = num('temperature', (v) => v > 0 && Number.isFinite(v), 'must be > 0');
  out.topK = num('top_k', (v) => Number.isInteger(v) && v >= 0, 'must be a whole number ≥ 0');
  out.topP = num('top_p', (v) => v > 0 && v <= 1, 'must be in (0, 1]');
  out.maxNewTokens = num('max_new_tokens', (v) => Number.isInteger(v) && v >= 1, 'must be a whole number ≥ 1');
  out.repetitionPenalty = num('repetition_penalty', (v) => v > 0 && Number.isFinite(v), 'must be > 0');
  if (o.eos_token_id !== undefined && o.eos_token_id !== null) {
    const ids = Array.isArray(o.eos_token_id) ? o.eos_token_id : [o.eos_token_id];
    const isId = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 0 && (vocabSize === undefined || v < vocabSize);
    if (ids.length && ids.every(isId)) out.eosTokenIds = ids as number[];
    else ignore('eos_token_id', `is not a token id or a list of them${vocabSize !== undefined ? ` (0 to ${vocabSize - 1})` : ''}`);
  }
  for (const k of Object.keys(o)) {
    if (HANDLED.has(k) || NEUTRAL.has(k) || o[k] === null) continue;
    if (k === 'max_length') {
      // a (valid) max_new_tokens wins in transformers; alone, max_length counts the prompt, which we do not
      if (o.max_length !== MAX_LENGTH_DEFAULT && out.maxNewTokens === undefined) out.notApplied.push(`max_length ${JSON.stringify(o.max_length)} from ${file} is not applied (it counts the prompt): Max new tokens is used instead.`);
    } else if (k in UNSUPPORTED) {
      if (JSON.stringify(o[k]) !== JSON.stringify(UNSUPPORTED[k])) out.notApplied.push(`${k} ${JSON.stringify(o[k])} from ${file} is not applied.`);
    } else out.notApplied.push(`${k} ${JSON.stringify(o[k])} from ${file} is not a setting this engine knows: not applied.`);
  }
  for (const k of ['temperature', 'topK', 'topP', 'maxNewTokens', 'repetitionPenalty'] as const) if (out[k] === undefined) delete out[k];
  return out;
}

/** The file of a model source: found and checked, or absent (found false), or unreadable (a warning, never an error). */
export async function readGenerationConfig(source: ModelSource, vocabSize?: number): Promise<GenerationDefaults> {
  let bytes: Uint8Array;
  try {
    bytes = await source.read(GENERATION_CONFIG);
  } catch (e) {
    if (e instanceof MissingFileError) return { found: false, warnings: [], notApplied: [] };
    return { found: false, warnings: [`${GENERATION_CONFIG} could not be read (${(e as Error).message}): transformers' defaults are used.`], notApplied: [] };
  }
  return parseGenerationConfig(new TextDecoder().decode(bytes), vocabSize);
}
