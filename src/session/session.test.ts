// The session's data path (no GPU): every record form the studio exports or imports, read through
// data/formats, checked before step 1 with every problem named at once; --skip-invalid keeps the rest.
import { beforeAll, describe, expect, it } from 'vitest';
import { loadDefaultTokenizer, type QwenTokenizer } from '../data/tokenizer.ts';
import { crc32, deflateSync } from 'node:zlib';
import { decodeImageFile, type RawImage } from '../data/image.ts';
import { DEFAULT_CONFIG, type Method } from '../config/config.ts';
import { completionIds } from '../train/dpo.ts';
import { groundingAnswerProblem, imageSizeProblem, preferenceProblem } from './checks.ts';
import { boxProblem } from '../data/bbox.ts';
import { ExampleProblems, exampleOf, prepareExamples, type ExampleSource } from './examples.ts';
import { datasetSources, syntheticSources, type FileHost } from './dataset.ts';
import { trainOptionsOf } from './run.ts';

let tok: QwenTokenizer;
beforeAll(async () => {
  tok = await loadDefaultTokenizer();
});

const raw = (width: number, height: number): RawImage => ({ data: new Uint8Array(width * height * 4).fill(128), width, height, channels: 4 });
/** images by name; "broken.png" fails to decode, anything else is missing */
const host = (sizes: Record<string, [number, number]>): FileHost => ({
  async read(ref) {
    if (ref === 'broken.png') return new Uint8Array([1, 2, 3]);
    if (!sizes[ref]) throw new Error(`ENOENT: ${ref}`);
    return new TextEncoder().encode(ref);
  },
  decode(bytes, name) {
    if (name === 'broken.png') throw new Error(`${name}: not a PNG or JPEG image`);
    const [w, h] = sizes[name];
    return raw(w, h);
  },
});
const IMGS = host({ 'a.png': [112, 84], 'b.png': [112, 84], 'tiny.png': [5, 5], 'long.png': [4000, 14] });
const jsonl = (...rows: unknown[]) => rows.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n');
const prep = (sources: ExampleSource[], method: Method = 'sft', extra: Partial<Parameters<typeof prepareExamples>[1]> = {}) =>
  prepareExamples(sources, { method, data: DEFAULT_CONFIG.data, tokenizer: tok, maxNewTokens: 128, ...extra });
const box = '{"bbox_2d": [10, 20, 50, 60], "label": "cat"}';

describe('dataset files through data/formats (the CLI reads what the studio exports)', () => {
  it('ms-swift messages, query/response, sharegpt conversations', async () => {
    const { sources, problems } = await datasetSources(jsonl(
      { messages: [{ role: 'user', content: '<image>Where is the cat?' }, { role: 'assistant', content: box }], images: ['a.png'] },
      { query: '<image>What is it?', response: 'A cat.', images: 'a.png' },
      { conversations: [{ from: 'human', value: '<image>hi' }, { from: 'gpt', value: 'ok' }], images: ['b.png'] },
    ), 'd.jsonl', IMGS, DEFAULT_CONFIG.data);
    expect(problems).toEqual([]);
    expect(sources.map((s) => [s.where, s.record.kind])).toEqual([['d.jsonl line 1', 'sft'], ['d.jsonl line 2', 'sft'], ['d.jsonl line 3', 'sft']]);
    expect(sources[0].record).toMatchObject({ question: 'Where is the cat?' });
    expect((sources[0].record as { answer: string }).answer).toMatch(/"bbox_2d": \[10, 20, 50, 60\]/);
  });

  it('trl with content given as a list of parts (the studio\'s trl export), and trl preference pairs', async () => {
    const user = { role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'Where is the cat?' }] };
    const { sources, problems } = await datasetSources(jsonl(
      { messages: [user, { role: 'assistant', content: [{ type: 'text', text: 'On the mat.' }] }], images: ['a.png'] },
      { prompt: [user], chosen: [{ role: 'assistant', content: [{ type: 'text', text: 'left' }] }], rejected: [{ role: 'assistant', content: 'right' }], images: ['a.png'] },
    ), 'trl.jsonl', IMGS, DEFAULT_CONFIG.data);
    expect(problems).toEqual([]);
    expect(sources[0].record).toEqual({ kind: 'sft', question: 'Where is the cat?', answer: 'On the mat.' });
    expect(sources[1].record).toEqual({ kind: 'preference', prompt: 'Where is the cat?', chosen: 'left', rejected: 'right' });
  });

  it('ms-swift objects with <ref-object> / <bbox>, and a GRPO prompt with a solution', async () => {
    const { sources, problems } = await datasetSources(jsonl(
      { messages: [{ role: 'user', content: '<image>Find <ref-object>' }, { role: 'assistant', content: '<bbox>' }], images: ['a.png'], objects: { ref: ['cat'], bbox: [[10, 20, 50, 60]] } },
      { prompt: [{ role: 'user', content: '<image>Where is the cat?' }], images: ['a.png'], solution: box },
    ), 's.jsonl', IMGS, DEFAULT_CONFIG.data);
    expect(problems).toEqual([]);
    expect(sources[0].record.kind).toBe('sft');
    expect((sources[0].record as { answer: string }).answer).toMatch(/\[10, 20, 50, 60\], "label": "cat"/);
    expect(sources[1].record).toMatchObject({ kind: 'rl', reward: 'iou', boxes: [{ x1: 10, y1: 20, x2: 50, y2: 60 }] });
  });

  it('reports every bad line at once, each with its line number, and keeps the good ones', async () => {
    const { sources, problems } = await datasetSources(jsonl(
      { query: '<image>ok?', response: 'yes', images: ['a.png'] },
      '{"messages": [broken',
      { messages: [{ role: 'assistant', content: 'I start' }, { role: 'user', content: '<image>then a question' }], images: ['a.png'] },
      { query: '<image>q', response: 'a', images: ['missing.png'] },
      { query: '<image>q', response: 'a', images: ['broken.png'] },
      { messages: [{ role: 'user', content: '<image>Find <ref-object>' }, { role: 'assistant', content: '<bbox>' }], images: ['a.png'], objects: { ref: ['cat'], bbox: [[50, 20, 10, 60]] } },
      { messages: [{ role: 'user', content: '<image>Find <ref-object>' }, { role: 'assistant', content: '<bbox>' }], images: ['a.png'], objects: { ref: ['cat'], bbox: [[10, 20, 500, 60]] } },
      { foo: 1, images: ['a.png'] },
      [1, 2],
    ), 'bad.jsonl', IMGS, DEFAULT_CONFIG.data);
    expect(sources.map((s) => s.where)).toEqual(['bad.jsonl line 1']);
    const by = Object.fromEntries(problems.map((p) => [p.where, p.message]));
    expect(Object.keys(by).sort()).toEqual([2, 3, 4, 5, 6, 7, 8, 9].map((n) => `bad.jsonl line ${n}`).sort());
    expect(by['bad.jsonl line 2']).toMatch(/invalid JSON/);
    expect(by['bad.jsonl line 3']).toMatch(/starts with the assistant/);
    expect(by['bad.jsonl line 4']).toMatch(/cannot read the image missing\.png \(ENOENT/);
    expect(by['bad.jsonl line 5']).toMatch(/not a PNG or JPEG/);
    expect(by['bad.jsonl line 6']).toMatch(/x1 50 must be less than x2 10/);
    expect(by['bad.jsonl line 7']).toMatch(/outside the 112×84 image/);
    expect(by['bad.jsonl line 8']).toMatch(/unknown record shape/);
    expect(by['bad.jsonl line 9']).toMatch(/expected a JSON object/);
  });

  it('a conversation that starts with the assistant is refused after a system prompt too (data\'s readRecord)', async () => {
    const sys = { role: 'system', content: 's' };
    const { sources, problems } = await datasetSources(jsonl(
      { messages: [sys, { role: 'assistant', content: 'a' }, { role: 'user', content: '<image>q' }], images: ['a.png'] },
      { messages: [sys, { role: 'user', content: '<image>q' }, { role: 'assistant', content: 'a' }], images: ['a.png'] },
    ), 'sys.jsonl', IMGS, DEFAULT_CONFIG.data);
    expect(problems.map((p) => `${p.where}: ${p.message}`)).toEqual([expect.stringMatching(/^sys\.jsonl line 1: .*the conversation starts with the assistant/)]);
    expect(sources.map((s) => s.where)).toEqual(['sys.jsonl line 2']);
  });
  it('reads a JSON array and COCO detection JSON too (data\'s parseDatasetFile)', async () => {
    const arr = await datasetSources(JSON.stringify([{ query: '<image>ok?', response: 'yes', images: ['a.png'] }]), 'd.json', IMGS, DEFAULT_CONFIG.data);
    expect(arr.problems).toEqual([]);
    expect(arr.sources.map((s) => s.record)).toEqual([{ kind: 'sft', question: 'ok?', answer: 'yes' }]);
    const coco = { images: [{ id: 1, file_name: 'a.png', width: 112, height: 84 }], annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [10, 10, 20, 20] }], categories: [{ id: 1, name: 'cat' }] };
    const c = await datasetSources(JSON.stringify(coco), 'coco.json', IMGS, DEFAULT_CONFIG.data);
    expect(c.problems).toEqual([]);
    expect(c.sources).toHaveLength(1);
    expect(c.sources[0].record).toMatchObject({ kind: 'sft' });
  });
});

// (moved from data/validate.test.ts when data's prepareRecords gave way to this path: the same cases,
// read through the CLI's real decoder, data/image.ts decodeImageFile)
function chunk(type: string, d: Buffer): Buffer {
  const out = Buffer.alloc(12 + d.length);
  out.writeUInt32BE(d.length, 0);
  out.write(type, 4, 'ascii');
  d.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + d.length)), 8 + d.length);
  return out;
}
function png(w: number, h: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  const rows = Buffer.alloc((w * 3 + 1) * h, 90);
  for (let y = 0; y < h; y++) rows[y * (w * 3 + 1)] = 0;
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0))]);
}

describe('real image files through decodeImageFile (the CLI\'s decoder)', () => {
  const chat = (img: string, answer: string) => ({ messages: [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'Where?' }] }, { role: 'assistant', content: [{ type: 'text', text: answer }] }], images: [img] });
  const data = { ...DEFAULT_CONFIG.data, minPixels: 56 * 56, maxPixels: 28 * 28 * 1280 };
  const fileHost = (files: Map<string, Buffer>, reads: string[] = [], maxPixels?: number, warnings: string[] = []): FileHost => ({
    async read(p) {
      reads.push(p);
      const b = files.get(p);
      if (!b) throw new Error('no such file');
      return b;
    },
    decode: (bytes, name) => decodeImageFile(bytes, name, { maxPixels, onWarning: (w) => warnings.push(w) }),
  });

  it('every record that cannot train is named with file, line and reason; the good ones train; an image is read once', async () => {
    const files = new Map<string, Buffer>([['ds/images/ok.png', png(112, 56)], ['ds/images/cut.png', png(112, 56).subarray(0, 60)], ['ds/images/tiny.png', png(8, 8)]]);
    const reads: string[] = [];
    const text = jsonl(
      chat('images/ok.png', '{"bbox_2d": [0, 0, 112, 56], "label": "all"}'),
      chat('images/missing.png', 'A'),
      chat('images/cut.png', 'A'),
      chat('images/tiny.png', 'A'),
      chat('images/ok.png', '{"bbox_2d": [10, 10, 113, 20]}'),
      { prompt: [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'Q' }] }], chosen: 'a', rejected: 'b', images: ['images/ok.png'] },
      chat('data:image/png;base64,iVBORw0KGgo=', 'A'),
    );
    const ds = await datasetSources(text, 'ds/train.jsonl', fileHost(files, reads), data);
    let err: ExampleProblems | undefined;
    try {
      prepareExamples(ds.sources, { method: 'sft', data, tokenizer: tok });
    } catch (e) {
      err = e as ExampleProblems;
    }
    const all = [...ds.problems, ...(err?.problems ?? [])];
    const by = Object.fromEntries(all.map((p) => [p.where, p.message]));
    expect(by['ds/train.jsonl line 2']).toMatch(/cannot read the image ds\/images\/missing\.png \(no such file\)/);
    expect(by['ds/train.jsonl line 3']).toMatch(/ds\/images\/cut\.png: truncated PNG: the IDAT chunk at byte 33 needs 148 bytes, the file has 15/);
    expect(by['ds/train.jsonl line 4']).toMatch(/image 8x8 \(HxW\) is too small: both sides must be at least 10 pixels/);
    expect(by['ds/train.jsonl line 5']).toMatch(/box \[10, 10, 113, 20\] is outside the 112×56 image \(x2 113 > width 112\)/);
    expect(by['ds/train.jsonl line 7']).toMatch(/data: URI images are read by the studio only/);
    expect(Object.keys(by).sort()).toEqual([2, 3, 4, 5, 7].map((n) => `ds/train.jsonl line ${n}`));
    // the DPO pair is of another kind than SFT takes: counted, not trained
    const ok = prepareExamples(ds.sources, { method: 'sft', data, tokenizer: tok, skipInvalid: true });
    expect(ok.where).toEqual(['ds/train.jsonl line 1']);
    expect(ok.otherKind).toBe(1);
    expect(ok.examples[0].images[0]).toMatchObject({ width: 112, height: 56, channels: 4 });
    expect(reads.filter((p) => p === 'ds/images/ok.png').length).toBe(1);
  });

  it('applies the pixel limit from the header, with PIL\'s warning below twice the limit', async () => {
    const files = new Map([['big.png', png(112, 56)]]);
    const warnings: string[] = [];
    const warn = await datasetSources(jsonl(chat('big.png', 'A')), 'train.jsonl', fileHost(files, [], 4000, warnings), data);
    expect(warn.problems).toEqual([]);
    expect(warnings).toEqual(['big.png: is 112×56 = 6,272 pixels, above the limit of 4,000 pixels (PIL warns: possible decompression bomb); it is decoded, but consider resizing it']);
    const refuse = await datasetSources(jsonl(chat('big.png', 'A')), 'train.jsonl', fileHost(files, [], 3000), data);
    expect(refuse.problems.map((p) => `${p.where}: ${p.message}`)).toEqual([expect.stringContaining("train.jsonl line 1: cannot read the image big.png (big.png: is 112×56 = 6,272 pixels, over twice the limit of 3,000 pixels (like PIL's MAX_IMAGE_PIXELS = 89,478,485, which refuses above 178,956,970): refused as a possible decompression bomb; resize it)")]);
  });
});

describe('every example checked before step 1', () => {
  const src = (where: string, record: ExampleSource['record'], img: RawImage | string = raw(112, 84)): ExampleSource =>
    ({ where, record, images: [typeof img === 'string' ? { name: 'x.png', error: img } : { name: `${where}.png`, image: img }] });

  it('all problems at once, naming the record; the default refuses', () => {
    const sources = [
      src('ok', { kind: 'sft', question: 'q', answer: box }),
      src('small', { kind: 'sft', question: 'q', answer: 'a' }, raw(5, 5)),
      src('thin', { kind: 'sft', question: 'q', answer: 'a' }, raw(4000, 14)),
      src('undecodable', { kind: 'sft', question: 'q', answer: 'a' }, 'truncated PNG'),
      src('outside', { kind: 'sft', question: 'q', answer: '{"bbox_2d": [10, 20, 500, 60]}' }),
      src('nan', { kind: 'sft', question: 'q', answer: '{"bbox_2d": [10, 20, "x", 60]}' }),
      src('long', { kind: 'sft', question: 'word '.repeat(3000), answer: 'a' }),
      src('empty', { kind: 'sft', question: 'q', answer: '  ' }),
    ];
    let err: ExampleProblems | undefined;
    try {
      prep(sources);
    } catch (e) {
      err = e as ExampleProblems;
    }
    expect(err).toBeInstanceOf(ExampleProblems);
    const by = Object.fromEntries(err!.problems.map((p) => [p.where, p.message]));
    expect(Object.keys(by).sort()).toEqual(['empty', 'long', 'nan', 'outside', 'small', 'thin', 'undecodable']);
    expect(by.small).toMatch(/too small/);
    expect(by.thin).toMatch(/aspect ratio/);
    expect(by.undecodable).toMatch(/truncated PNG/);
    expect(by.outside).toMatch(/outside the 112×84 image/);
    expect(by.nan).toMatch(/not a finite number|parse/);
    expect(by.long).toMatch(/above max length 2048/);
    expect(by.empty).toMatch(/answer is empty/);
    expect(err!.message).toMatch(/^7 of 8 training records cannot be trained on/);
  });

  it('skipInvalid trains on exactly the good records and names the skipped ones', () => {
    const sources = [src('good 1', { kind: 'sft', question: 'q', answer: box }), src('bad', { kind: 'sft', question: 'q', answer: 'a' }, raw(5, 5)), src('good 2', { kind: 'sft', question: 'q2', answer: 'b' })];
    const r = prep(sources, 'sft', { skipInvalid: true });
    expect(r.where).toEqual(['good 1', 'good 2']);
    expect(r.examples).toHaveLength(2);
    expect(r.problems.map((p) => p.where)).toEqual(['bad']);
    expect(r.plan.images).toEqual([{ height: 84, width: 112 }]);
  });

  it('DPO: chosen = rejected is refused; GRPO: prompt + new tokens must fit; IoU prompts need boxes', () => {
    expect(() => prep([src('same', { kind: 'preference', prompt: 'p', chosen: 'A', rejected: ' A ' })], 'dpo')).toThrow(/same: the chosen and rejected answers are the same/);
    expect(() => prep([src('p', { kind: 'rl', prompt: 'p', reward: 'iou', reference: '' })], 'grpo')).toThrow(/IoU reward needs reference boxes/);
    expect(() => prep([src('p', { kind: 'rl', prompt: 'p', reward: 'exact', reference: 'x' })], 'grpo', { maxNewTokens: 2040 })).toThrow(/with 2040 new tokens is \d+ tokens.*above max length 2048/);
  });

  it('records of another kind are counted; none of the method\'s kind is an error that says which kinds there are', () => {
    const sources = [src('a', { kind: 'sft', question: 'q', answer: 'a' }), src('b', { kind: 'preference', prompt: 'p', chosen: 'x', rejected: 'y' })];
    expect(prep(sources, 'sft').otherKind).toBe(1);
    expect(() => prep([sources[0]], 'dpo', { name: 'cats' })).toThrow(/cats has 1 question\/answer \(SFT\) record, but DPO trains on preference-pair/);
  });

  it('synthetic data goes through the same checks', () => {
    for (const m of ['sft', 'dpo', 'grpo'] as const) expect(prep(syntheticSources(m, 3), m).examples).toHaveLength(3);
  });

  it('the small checks', () => {
    expect(imageSizeProblem(20000, 20000, 3136, 401408)).toMatch(/decompression bomb/);
    expect(imageSizeProblem(112, 84, 3136, 401408)).toBeNull();
    expect(boxProblem([1, 2, 3], 10, 10)).toMatch(/must be 4 numbers/);
    expect(boxProblem([1, 2, 3, Infinity], 10, 10)).toMatch(/y2 is not a finite number/);
    expect(boxProblem([5, 0, 2, 10], 10, 10)).toMatch(/x1 5 must be less than x2 2/);
    expect(boxProblem([0, 0, 11, 10], 10, 10)).toMatch(/outside the 10×10 image/);
    expect(boxProblem([0, 0, 10, 10], 10, 10)).toBeNull();
    expect(groundingAnswerProblem('plain text', { width: 10, height: 10 })).toBeNull();
    expect(groundingAnswerProblem('{"bbox_2d": [1, 2, 3]}', { width: 10, height: 10 })).toMatch(/must be 4 numbers/);
    expect(groundingAnswerProblem('{"bbox_2d": [1, 2, 30, 4]}', { width: 10, height: 10 })).toMatch(/outside the 10×10 image.*resized frame/);
    expect(preferenceProblem('a', '')).toMatch(/both non-empty/);
  });
});

describe('trl parity of the scored span', () => {
  it('DPO scores answer + <|im_end|> + "\\n", the completion trl 1.x tokenizes from the chat template', () => {
    const ids = completionIds(tok, '[{"bbox_2d": [1, 2, 3, 4]}]');
    expect(ids.slice(-2)).toEqual([tok.special.imEnd, 198]);
    expect(ids.slice(0, -2)).toEqual(tok.encode('[{"bbox_2d": [1, 2, 3, 4]}]'));
    // the same tokens as encoding the template's completion text, as trl does ("answer<|im_end|>\n")
    expect(ids).toEqual(tok.encode('[{"bbox_2d": [1, 2, 3, 4]}]<|im_end|>\n'));
  });
});

describe('one config for both front ends', () => {
  it('the Trainer\'s view is built from the config alone (no defaults of its own)', () => {
    const o = trainOptionsOf({ ...DEFAULT_CONFIG, method: 'grpo' });
    expect(o.optim).toMatchObject({ learningRate: DEFAULT_CONFIG.optim.learningRate, gradAccumSteps: DEFAULT_CONFIG.optim.gradAccumSteps, warmupSteps: DEFAULT_CONFIG.optim.warmupSteps, beta1: 0.9 });
    expect(o.grpo).toMatchObject({ maxNewTokens: DEFAULT_CONFIG.grpo.maxNewTokens, epsilon: DEFAULT_CONFIG.grpo.epsilon });
    expect(o.ppo?.maxNewTokens).toBe(DEFAULT_CONFIG.ppo.maxNewTokens);
    expect([o.ppo?.numPpoEpochs, o.ppo?.numMiniBatches]).toEqual([DEFAULT_CONFIG.ppo.numPpoEpochs, DEFAULT_CONFIG.ppo.numMiniBatches]);
    expect(o.checkpointEvery).toBe(DEFAULT_CONFIG.optim.saveSteps);
    expect(trainOptionsOf(DEFAULT_CONFIG, { minPixels: 784, maxPixels: 1568 }).data).toEqual({ minPixels: 784, maxPixels: 1568, maxLength: 2048 });
  });

  it('exampleOf maps records to the Trainer\'s examples', () => {
    const im = [raw(112, 84)];
    expect(exampleOf({ kind: 'sft', question: 'q', answer: 'a' }, im, 'sft')).toMatchObject({ kind: 'sft', messages: [{ role: 'user' }, { role: 'assistant', content: 'a' }] });
    expect(exampleOf({ kind: 'sft', question: 'q', answer: 'a' }, im, 'dpo')).toBeUndefined();
    expect(exampleOf({ kind: 'rl', prompt: 'p', reward: 'iou', reference: '', boxes: [{ x1: 1, y1: 2, x2: 3, y2: 4, label: '' }] }, im, 'ppo')).toMatchObject({ kind: 'rl', reference: { boxes: [[1, 2, 3, 4]] } });
  });
});
