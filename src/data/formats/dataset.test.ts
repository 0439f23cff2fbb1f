// The one dataset reader, as the CLI uses it: bad inputs each with their exact message (file, line,
// reason), every problem of a file at once, paths that leave the dataset folder, boxes checked in
// their frame, and a round trip of every studio export format through parseDatasetFile + recordExample.
import { describe, expect, it } from 'vitest';
import { boxProblem } from '../bbox.ts';
import { smartResize } from '../image.ts';
import { recordProblems } from '../validate.ts';
import { parseDatasetFile, parseYoloFile } from './dataset.ts';
import { recordExample } from './example.ts';
import { exportDataset, type ExportFormat } from './export.ts';
import { formatError } from './jsonl.ts';
import { readRecord, type DatasetRecord } from './parse.ts';
import { pathEscape, resolveImagePath } from './paths.ts';
import { emptyLabels, newDataset, type Box, type DatasetMeta, type ImageRecord, type TaskKind } from './types.ts';

const OPTS = { minPixels: 56 * 56, maxPixels: 28 * 28 * 1280 };
const jsonl = (...lines: unknown[]) => lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n';
const user = (text: string) => ({ role: 'user', content: [{ type: 'image' }, { type: 'text', text }] });
const asst = (text: string) => ({ role: 'assistant', content: [{ type: 'text', text }] });
const one = (v: Record<string, unknown>, file = 'data/train.jsonl') => {
  const r = readRecord(v, file, 7);
  return { record: r.record, problems: r.problems.map(formatError) };
};

describe('paths', () => {
  it('joins with the dataset file folder and normalises', () => {
    expect(resolveImagePath('images/a.png', 'bundle/data.jsonl')).toEqual({ path: 'bundle/images/a.png' });
    expect(resolveImagePath('./x/../images\\b.png', 'data.jsonl')).toEqual({ path: 'images/b.png' });
    expect(resolveImagePath('a.png', '')).toEqual({ path: 'a.png' });
    // An absolute dataset file (the CLI): its folder is kept as given.
    expect(resolveImagePath('images/./a.png', '/home/me/ds/train.jsonl')).toEqual({ path: '/home/me/ds/images/a.png' });
    expect(resolveImagePath('a.png', 'C:\\ds\\train.jsonl')).toEqual({ path: 'C:/ds/a.png' });
  });
  it('refuses every way out of the folder, saying which', () => {
    expect(pathEscape('../secret.png')).toBe('".." leads above the dataset folder');
    expect(pathEscape('images/../../secret.png')).toBe('".." leads above the dataset folder');
    expect(pathEscape('/etc/passwd')).toBe('it is an absolute path');
    expect(pathEscape('C:\\Users\\me\\a.png')).toBe('it is an absolute Windows path (drive C:)');
    expect(pathEscape('c:a.png')).toBe('it is an absolute Windows path (drive C:)');
    expect(pathEscape('\\\\server\\share\\a.png')).toBe('it is a network (UNC) path');
    expect(pathEscape('//server/share/a.png')).toBe('it is a network (UNC) path');
    expect(pathEscape('file:///etc/passwd')).toBe('it is a URL (file:); only files inside the dataset folder are read');
    expect(pathEscape('https://example.com/a.png')).toBe('it is a URL (https:); only files inside the dataset folder are read');
    expect(pathEscape('%2e%2e/secret.png')).toBe('".." leads above the dataset folder once percent-decoded');
    expect(pathEscape('images/..%2f..%2fsecret.png')).toBe('".." leads above the dataset folder once percent-decoded');
    expect(pathEscape('%252e%252e%252fsecret.png')).toBe('".." leads above the dataset folder once percent-decoded');
    expect(pathEscape('%2Fetc%2Fpasswd')).toBe('it is an absolute path once percent-decoded');
    expect(pathEscape('a.png\0.txt')).toBe('the path holds a NUL byte');
    expect(pathEscape('')).toBe('the image path is empty');
    expect(pathEscape('images/a..b.png')).toBeNull();
    expect(pathEscape('images/50%.png')).toBeNull();
  });
  it('names record line and path in the reader', () => {
    const { problems } = one({ messages: [user('Q'), asst('A')], images: ['../../etc/x.png'] });
    expect(problems).toEqual(['data/train.jsonl line 7: image path "../../etc/x.png" is refused: ".." leads above the dataset folder; write it relative to the folder of train.jsonl and keep the image inside that folder']);
  });
});

describe('boxProblem', () => {
  it('accepts a box inside the image and names each fault', () => {
    expect(boxProblem([0, 0, 640, 480], 640, 480)).toBeNull();
    expect(boxProblem([1, 2, 3], 640, 480)).toBe('box [1, 2, 3] must be 4 numbers [x1, y1, x2, y2], it has 3');
    expect(boxProblem([1, NaN, 3, 4], 640, 480)).toBe('box [1, NaN, 3, 4]: y1 is not a finite number');
    expect(boxProblem([1, 2, Infinity, 4], 640, 480)).toBe('box [1, 2, Infinity, 4]: x2 is not a finite number');
    expect(boxProblem([1, '2', 3, 4], 640, 480)).toBe('box [1, "2", 3, 4]: y1 is not a finite number');
    expect(boxProblem([50, 10, 40, 20], 640, 480)).toBe('box [50, 10, 40, 20]: x1 50 must be less than x2 40');
    expect(boxProblem([10, 10, 10, 20], 640, 480)).toBe('box [10, 10, 10, 20]: x1 10 must be less than x2 10');
    expect(boxProblem([10, 30, 20, 20], 640, 480)).toBe('box [10, 30, 20, 20]: y1 30 must be less than y2 20');
    expect(boxProblem([-1, 10, 700, 20], 640, 480)).toBe('box [-1, 10, 700, 20] is outside the 640×480 image (x1 -1 < 0, x2 700 > width 640)');
    expect(boxProblem([10, 10, 20, 481], 640, 480)).toBe('box [10, 10, 20, 481] is outside the 640×480 image (y2 481 > height 480)');
  });
});

describe('readRecord: every format the studio exports and the usual tools write', () => {
  it('trl records with content as a list of parts (the studio and cluster bundle export)', () => {
    const { record, problems } = one({ messages: [user('Where is the cat?'), asst('{"bbox_2d": [1, 2, 30, 40], "label": "cat"}')], images: ['images/a.png'] });
    expect(problems).toEqual([]);
    expect(record).toMatchObject({ kind: 'sft', images: ['data/images/a.png'], line: 7 });
    expect(record!.messages[0].content).toEqual([{ type: 'image' }, { type: 'text', text: 'Where is the cat?' }]);
    expect(record!.boxes).toEqual([{ x1: 1, y1: 2, x2: 30, y2: 40, frame: 'resized', label: 'cat', question: 'Where is the cat?', where: 'messages[1]', answer: '{"bbox_2d": [1, 2, 30, 40], "label": "cat"}' }]);
  });
  it('image paths inside content parts (transformers chat format), with no "images" list', () => {
    const { record, problems } = one({ messages: [{ role: 'user', content: [{ type: 'image', image: 'pics/a.png' }, { type: 'text', text: 'Q' }] }, asst('A')] });
    expect(problems).toEqual([]);
    expect(record!.images).toEqual(['data/pics/a.png']);
    expect(record!.messages[0].content).toEqual([{ type: 'image' }, { type: 'text', text: 'Q' }]);
    expect(one({ messages: [{ role: 'user', content: [{ type: 'image', image: '../a.png' }] }, asst('A')] }).problems).toEqual(['data/train.jsonl line 7: image path "../a.png" is refused: ".." leads above the dataset folder; write it relative to the folder of train.jsonl and keep the image inside that folder']);
    expect(one({ messages: [{ role: 'user', content: [{ type: 'image', image: 'a.png' }] }, asst('A')], images: ['b.png'] }).problems).toEqual(['data/train.jsonl line 7: the image parts name "a.png" but "images" holds "b.png"']);
  });
  it('LLaMA-Factory sharegpt: <image> tags placed, system kept, from/value roles', () => {
    const { record } = one({ conversations: [{ from: 'human', value: 'Look <image> here' }, { from: 'gpt', value: 'A dog.' }], system: 'Be brief.', images: ['d.png'] });
    expect(record!.messages).toEqual([
      { role: 'system', content: [{ type: 'text', text: 'Be brief.' }] },
      { role: 'user', content: [{ type: 'text', text: 'Look ' }, { type: 'image' }, { type: 'text', text: ' here' }] },
      { role: 'assistant', content: [{ type: 'text', text: 'A dog.' }] },
    ]);
  });
  it('ms-swift objects: <ref-object> filled now, <bbox> in the resized frame once the size is known', () => {
    const { record, problems } = one({
      messages: [{ role: 'user', content: '<image>Find the <ref-object>' }, { role: 'assistant', content: '{"bbox_2d": <bbox>, "label": "<ref-object>"}' }],
      images: ['a.png'], objects: { ref: ['spoon'], bbox: [[325, 65, 425, 325]] },
    });
    expect(problems).toEqual([]);
    expect(record!.boxes[0]).toMatchObject({ x1: 325, frame: 'abs', label: 'spoon', question: 'Find the spoon' });
    // 1000x500 → resized 1008x504: [325,65,425,325] * 1.008, rounded.
    const ex = recordExample(record!, 'sft', [{ width: 1000, height: 500 }], OPTS);
    expect(ex).toEqual({ kind: 'sft', messages: [
      { role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'Find the spoon' }] },
      { role: 'assistant', content: [{ type: 'text', text: '{"bbox_2d": [328, 66, 428, 328], "label": "spoon"}' }] },
    ] });
  });
  it('keeps answers exactly as written in the resized frame (no reformatting, no invented label)', () => {
    const answer = '{"bbox_2d": [325, 65, 425, 325]}';
    const { record } = one({ messages: [user('Where is the spoon?'), asst(answer)], images: ['a.png'] });
    expect(record!.boxes[0].label).toBe('');
    const ex = recordExample(record!, 'sft', [{ width: 1000, height: 500 }], OPTS) as { messages: { content: { text?: string }[] }[] };
    expect(ex.messages[1].content[0].text).toBe(answer);
  });
  it('answers read in original pixels are converted into the resized frame, the rest of the text kept', () => {
    const r = readRecord({ messages: [user('Q'), asst('Here: {"bbox_2d": [100, 50, 500, 250], "label": "x"} ok')], images: ['a.png'] }, 'd.jsonl', 1, { answerFrame: 'abs' });
    const ex = recordExample(r.record!, 'sft', [{ width: 1000, height: 500 }], OPTS) as { messages: { content: { text?: string }[] }[] };
    expect(ex.messages[1].content[0].text).toBe('Here: {"bbox_2d": [101, 50, 504, 252], "label": "x"} ok');
  });
  it('DPO and GRPO forms become the method\'s example; the wrong method says why', () => {
    const pair = one({ prompt: [user('Better?')], chosen: [asst('yes')], rejected: [asst('no')], images: ['p.png'] }).record!;
    expect(recordExample(pair, 'dpo', [{ width: 100, height: 100 }], OPTS)).toEqual({ kind: 'dpo', prompt: [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'Better?' }] }], chosen: 'yes', rejected: 'no' });
    expect(recordExample(pair, 'sft', [], OPTS)).toBe('it is a DPO pair (chosen/rejected); SFT needs a conversation whose last turn is the assistant\'s answer');
    const rl = one({ prompt: [user('Find it')], images: ['p.png'], solution: '{"bbox_2d": [1, 2, 3, 4]}' }).record!;
    expect(rl.kind).toBe('rl');
    expect(recordExample(rl, 'grpo', [{ width: 100, height: 100 }], OPTS)).toMatchObject({ kind: 'rl', reference: { boxes: [[1, 2, 3, 4]] } });
    const sft = one({ query: '<image>Q', response: 'A', images: ['p.png'] }).record!;
    expect(recordExample(sft, 'grpo', [{ width: 100, height: 100 }], OPTS)).toEqual({ kind: 'rl', prompt: [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'Q' }] }], reference: { answer: 'A' } });
  });
});

describe('readRecord: bad records, every problem at once', () => {
  it('a record with several faults lists them all', () => {
    const { record, problems } = one({ messages: [{ role: 'wizard', content: 'x' }, { role: 'user', content: [{ type: 'video' }] }, { role: 'assistant', content: '' }], images: ['/abs.png', 3] });
    expect(record).toBeUndefined();
    expect(problems).toEqual([
      'data/train.jsonl line 7: image path "/abs.png" is refused: it is an absolute path; write it relative to the folder of train.jsonl and keep the image inside that folder',
      'data/train.jsonl line 7: "images"[1] must be a path string (or {"path": ...}), got 3',
      'data/train.jsonl line 7: messages[0]: unknown role "wizard" (expected user/assistant/system, or human/gpt)',
      'data/train.jsonl line 7: messages[1]: content part 1 is not {"type": "text", "text": ...} or {"type": "image"}: {"type":"video"}',
      'data/train.jsonl line 7: messages[2]: the assistant answer is empty',
    ]);
  });
  it('names each bad-input case with its reason', () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ messages: [user('Q'), asst('{"bbox_2d": [1, NaN, 3, 4], "label": "a"}')], images: ['a.png'] }, 'messages[1]: box [1, NaN, 3, 4]: y1 is not a finite number'],
      [{ messages: [user('Q'), asst('{"bbox_2d": [1, 2, 3], "label": "a"}')], images: ['a.png'] }, 'messages[1]: box [1, 2, 3] must be 4 numbers [x1, y1, x2, y2], it has 3'],
      [{ messages: [user('Q'), asst('{"bbox_2d": [1, 2, 3, "x"]}')], images: ['a.png'] }, 'messages[1]: box [1, 2, 3, "x"]: y2 is not a finite number'],
      [{ messages: [asst('hi'), user('Q')], images: ['a.png'] }, 'messages[0]: the conversation starts with the assistant; it must start with a user turn'],
      [{ messages: [{ role: 'system', content: 'S' }], images: ['a.png'] }, 'no user turn (the question)'],
      [{ prompt: [user('Q')], chosen: [asst('same')], rejected: [asst('same ')], images: ['a.png'] }, 'chosen and rejected are the same answer; DPO learns nothing from the pair'],
      [{ prompt: [user('Q')], chosen: [asst('')], rejected: [asst('b')], images: ['a.png'] }, 'the chosen answer is empty'],
      [{ prompt: [user('Q')], chosen: [], rejected: [asst('b')], images: ['a.png'] }, '"chosen" is an empty list'],
      [{ messages: [user('Q')], rejected_response: 'no', images: ['a.png'] }, '"rejected_response" is given but the conversation does not end with an assistant turn (the chosen answer)'],
      [{ messages: [{ role: 'user', content: '<image><image>Q' }, asst('A')], images: ['a.png'] }, '2 image markers (<image> or {"type": "image"}) but 1 image in "images"'],
      [{ messages: [user('Q'), asst('<bbox>')], images: ['a.png'], objects: { ref: ['a'], bbox: [[1, 2, 3, 4]], bbox_type: 'norm2' } }, 'objects: unknown bbox_type "norm2" (expected real or norm1000)'],
      [{ messages: [user('Q'), asst('<bbox> <bbox>')], images: ['a.png'], objects: { ref: ['a'], bbox: [[1, 2, 3, 4]] } }, 'messages[1]: <bbox> number 2 has no box in "objects" (1 given)'],
      [{ query: 1, response: 'A', images: ['a.png'] }, '"query" must be a string'],
      [{ query: '<image>Q', response: 'A', history: [['q']], images: ['a.png'] }, '"history"[0] must be a [query, response] pair of strings'],
      [{ prompt: [user('Q')], images: ['a.png'], solution: '{"bbox_2d": [5, 5, 1, 1] ' }, 'solution: a bbox_2d object is not closed: {"bbox_2d": [5, 5, 1, 1] '],
      [{ foo: 1 }, 'unknown record shape: expected "messages", "conversations", "query"/"response" or "prompt"'],
    ];
    for (const [v, reason] of cases) expect(one(v).problems, JSON.stringify(v)).toEqual([`data/train.jsonl line 7: ${reason}`]);
  });
  it('a file reports every bad line and keeps the good ones', () => {
    const text = jsonl({ messages: [user('Q1'), asst('A1')], images: ['a.png'] }, '{"messages": [', { messages: [user('Q3'), asst('')], images: ['b.png'] }, '[1]', { query: '<image>Q5', response: 'A5', images: ['c.png'] });
    const d = parseDatasetFile(text, 'ds/train.jsonl');
    expect(d.records.map((r) => r.line)).toEqual([1, 5]);
    expect(d.problems.map(formatError)).toEqual([
      expect.stringMatching(/^ds\/train\.jsonl line 2: invalid JSON/),
      'ds/train.jsonl line 4: expected a JSON object, got an array',
      'ds/train.jsonl line 3: messages[1]: the assistant answer is empty',
    ]);
    expect(parseDatasetFile('\n\n', 'empty.jsonl').problems.map(formatError)).toEqual(['empty.jsonl: no records: the file is empty']);
  });
});

describe('recordProblems: images and boxes against the image sizes', () => {
  const rec = (v: Record<string, unknown>, frame: 'resized' | 'abs' = 'resized') => readRecord({ images: ['a.png'], ...v }, 'd.jsonl', 4, { answerFrame: frame }).record!;
  it('checks boxes in their frame and the image size smart_resize needs', () => {
    const r = rec({ messages: [user('Q'), asst('[{"bbox_2d": [10, 10, 1008, 504]}, {"bbox_2d": [10, 10, 1009, 20]}]')] });
    expect(recordProblems(r, [{ width: 1000, height: 500 }], OPTS).map(formatError)).toEqual([
      'd.jsonl line 4: messages[1]: box [10, 10, 1009, 20] is outside the 1008×504 image (x2 1009 > width 1008) (the resized frame of a.png, 1000×500)',
    ]);
    const abs = rec({ messages: [user('Q'), asst('{"bbox_2d": [10, 10, 1001, 20]}')] }, 'abs');
    expect(recordProblems(abs, [{ width: 1000, height: 500 }], OPTS).map(formatError)).toEqual(['d.jsonl line 4: messages[1]: box [10, 10, 1001, 20] is outside the 1000×500 image (x2 1001 > width 1000) (original pixels of a.png, 1000×500)']);
    const swift = rec({ messages: [user('Q'), asst('<bbox>')], objects: { ref: ['a'], bbox: [[400, 10, 300, 20]] } });
    expect(recordProblems(swift, [{ width: 1000, height: 500 }], OPTS).map(formatError)).toEqual(['d.jsonl line 4: objects.bbox[0]: box [400, 10, 300, 20]: x1 400 must be less than x2 300 (original pixels of a.png, 1000×500)']);
    expect(recordProblems(rec({ messages: [user('Q'), asst('A')] }), [{ width: 5, height: 5 }], OPTS).map(formatError)).toEqual(['d.jsonl line 4: image data/a.png (5×5): image 5x5 (HxW) is too small: both sides must be at least 10 pixels'.replace('data/', '')]);
    expect(recordProblems(rec({ messages: [user('Q'), asst('A')] }), [{ width: 4000, height: 12 }], OPTS)[0].reason).toBe('image a.png (4000×12): image 12x4000 (HxW) has aspect ratio 333.3, above the limit of 200');
  });
});

describe('round trip: every studio export format → parseDatasetFile → recordExample', () => {
  const box = (x1: number, y1: number, x2: number, y2: number, label = 'cat', question = ''): Box => ({ id: `b${x1}`, x1, y1, x2, y2, label, question });
  const img = (id: string, name: string, w: number, h: number, labels: Partial<ImageRecord['labels']>): ImageRecord => ({
    id, datasetId: 'ds', name, type: 'image/png', width: w, height: h, origWidth: w, origHeight: h, scale: 1, bytes: 4, order: 0, addedAt: 0, labels: { ...emptyLabels(), ...labels },
  });
  const ds = (kind: TaskKind): DatasetMeta => ({ ...newDataset('t', kind, 0), ...OPTS, classes: ['cat'] });
  const images = [img('i1', 'a.png', 1000, 500, { boxes: [box(100, 50, 500, 250, 'cat', 'Where is the cat?'), box(600, 100, 900, 400, '')] })];
  const [rh, rw] = smartResize(500, 1000, 28, OPTS.minPixels, OPTS.maxPixels);
  const want = [[100, 50, 500, 250], [600, 100, 900, 400]].map((b) => [b[0] * rw / 1000, b[1] * rh / 500, b[2] * rw / 1000, b[3] * rh / 500].map(Math.round));

  function read(format: ExportFormat, d: DatasetMeta, list: ImageRecord[]): DatasetRecord[] {
    const ex = exportDataset(d, list, format);
    const out: DatasetRecord[] = [];
    for (const f of ex.files) {
      const path = `bundle/${f.path}`;
      if (/dataset_info|classes\.txt/.test(f.path)) continue;
      const p = f.path.endsWith('.txt') ? parseYoloFile(f.text, path, `bundle/images/a.png`, d.classes) : parseDatasetFile(f.text, path);
      expect(p.problems).toEqual([]);
      out.push(...p.records);
    }
    return out;
  }
  for (const format of ['swift', 'swift-query', 'swift-objects', 'sharegpt', 'trl', 'coco', 'yolo', 'patchwork'] as ExportFormat[]) {
    it(`grounding via ${format}: images resolved, boxes back in the resized frame, no invented label`, () => {
      const recs = read(format, ds('grounding'), images);
      expect(recs.every((r) => r.images[0] === 'bundle/images/a.png')).toBe(true);
      const got: number[][] = [];
      const labels: string[] = [];
      for (const r of recs) {
        expect(recordProblems(r, [{ width: 1000, height: 500 }], OPTS)).toEqual([]);
        const ex = recordExample(r, 'sft', [{ width: 1000, height: 500 }], OPTS);
        if (typeof ex === 'string' || ex.kind !== 'sft') throw new Error(String(ex));
        const answer = ex.messages[ex.messages.length - 1];
        const text = (answer.content as { text: string }[]).map((p) => p.text).join('');
        for (const m of text.matchAll(/"bbox_2d": \[([^\]]*)\](?:, "label": "([^"]*)")?/g)) {
          got.push(m[1].split(',').map(Number));
          labels.push(m[2] ?? '');
        }
      }
      // One resized pixel of tolerance for formats written in other frames (COCO/YOLO/objects: absolute or normalised).
      const sorted = (a: number[][]) => [...a].sort((x, y) => x[0] - y[0]);
      sorted(got).forEach((b, i) => b.forEach((v, k) => expect(Math.abs(v - sorted(want)[i][k])).toBeLessThanOrEqual(format === 'yolo' ? 1 : 0)));
      expect(got.length).toBe(2);
      // COCO and YOLO need a class for every box, so their exports name unlabelled boxes "object".
      if (format !== 'coco' && format !== 'yolo') expect(labels.sort()).toEqual(['', 'cat']);
    });
  }
  it('vqa, preference and rl via trl and swift', () => {
    for (const format of ['trl', 'swift'] as ExportFormat[]) {
      const v = read(format, ds('vqa'), [img('i', 'a.png', 100, 100, { question: 'What?', answer: 'A cat.' })]);
      expect(recordExample(v[0], 'sft', [{ width: 100, height: 100 }], OPTS)).toMatchObject({ kind: 'sft', messages: [{ role: 'user' }, { role: 'assistant', content: [{ type: 'text', text: 'A cat.' }] }] });
      const p = read(format, ds('preference'), [img('i', 'a.png', 100, 100, { question: 'Better?', chosen: 'yes', rejected: 'no' })]);
      expect(recordExample(p[0], 'dpo', [{ width: 100, height: 100 }], OPTS)).toMatchObject({ kind: 'dpo', chosen: 'yes', rejected: 'no' });
      const rl = read(format, { ...ds('rl'), reward: 'exact' }, [img('i', 'a.png', 100, 100, { question: 'Count?', answer: '4' })]);
      expect(recordExample(rl[0], 'grpo', [{ width: 100, height: 100 }], OPTS)).toMatchObject({ kind: 'rl', reference: { answer: '4' } });
    }
  });
});

describe('parseDatasetFolder: an unzipped export or a folder, as the CLI reads one', () => {
  it('reads a YOLO export (labels/*.txt + classes.txt + images/) and a JSONL bundle, reporting an orphan label file', async () => {
    const { parseDatasetFolder } = await import('./dataset.ts');
    const { unzipFiles, zipDataset } = await import('./zip.ts');
    const d = { ...newDataset('t', 'grounding', 0), ...OPTS, classes: ['cat'] };
    const im = { id: 'i', datasetId: 'ds', name: 'a.png', type: 'image/png', width: 1000, height: 500, origWidth: 1000, origHeight: 500, scale: 1, bytes: 4, order: 0, addedAt: 0, labels: { ...emptyLabels(), boxes: [{ id: 'b', x1: 100, y1: 50, x2: 500, y2: 250, label: 'cat', question: '' }] } };
    const ex = exportDataset(d, [im], 'yolo');
    const files = unzipFiles(zipDataset([...ex.files, { path: 'labels/zzz.txt', text: '0 0.5 0.5 0.1 0.1\n' }], new Map([['images/a.png', new Uint8Array(4)]])));
    const texts = await Promise.all(files.filter((f) => !f.path.startsWith('images/')).map(async (f) => ({ path: f.path, text: new TextDecoder().decode(await f.bytes()) })));
    const p = parseDatasetFolder(texts, files.filter((f) => f.path.startsWith('images/')).map((f) => f.path));
    expect(p.problems.map(formatError)).toEqual(['labels/zzz.txt: a YOLO label file with no image of the same name (labels/a.txt goes with images/a.png)']);
    expect(p.records.map((r) => [r.images, r.boxes.map((b) => b.label)])).toEqual([[['images/a.png'], ['cat']]]);
    const e = recordExample(p.records[0], 'sft', [{ width: 1000, height: 500 }], OPTS) as { messages: { content: { text?: string }[] }[] };
    expect(e.messages[0].content[1].text).toBe('Locate the cat in the image and output its bbox coordinates in JSON format.');
    expect(e.messages[1].content[0].text).toBe('```json\n[\n\t{"bbox_2d": [101, 50, 504, 252], "label": "cat"}\n]\n```');
    expect(parseDatasetFolder([], ['images/a.png']).problems.map(formatError)).toEqual(['no dataset file (JSONL, JSON, COCO or YOLO labels) in the folder']);
  });
});
