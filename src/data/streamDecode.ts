// Incremental decoding of generated tokens, for streaming an answer as it is generated. Byte-level
// BPE splits a multi-byte character (é, 中, an emoji) over several tokens; decoding a prefix that
// ends inside one gives U+FFFD for its partial bytes. So each push decodes the whole growing id
// list (the final decode is then the streamed text by construction) and shows only what is
// settled: the text without the replacement characters at its end, which later tokens may
// complete. Generated ids are at most a few hundred, so decoding them all each step is cheap.

export class IncrementalDecoder {
  private ids: number[] = [];
  private shown = '';

  /** `decode`: the tokenizer's decode of a whole id list (e.g. skipping special tokens). */
  constructor(private decode: (ids: number[]) => string) {}

  /** Add a token; returns the text settled so far (it only grows while the decode keeps its prefix). */
  push(id: number): string {
    this.ids.push(id);
    const full = this.decode(this.ids);
    const settled = full.replace(/\uFFFD+$/, '');
    // a decode that rewrote earlier text (not byte-level BPE) is shown as it now is
    this.shown = settled;
    return settled;
  }

  /** The decode of every token pushed, replacement characters included (the answer once generation ends). */
  finish(): string {
    this.shown = this.decode(this.ids);
    return this.shown;
  }

  get text(): string {
    return this.shown;
  }

  get tokens(): number {
    return this.ids.length;
  }
}
