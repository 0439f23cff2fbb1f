import { describe, expect, it } from 'vitest';
import { formatGroundingAnswer, parseGroundingAnswer } from './answer.ts';
import { parseCoco, toCoco } from './coco.ts';
import { cxcywhToXyxy, fromFilePixels, normalizeBox, toFilePixels, xywhToXyxy, xyxyToCxcywh, xyxyToXywh, type BoxFrame } from './coords.ts';
import { exportDataset, exportPaths, type ExportFormat } from './export.ts';
import { labelsForImage, planImport, sourceFromBytes } from './import.ts';
import { formatError, parseJsonArray, parseJsonl, toJsonl } from './jsonl.ts';
import { parseRecord, type ParsedSample } from './parse.ts';
import { taskRecords } from './records.ts';
import { emptyLabels, newDataset, type Box, type DatasetMeta, type ImageRecord, type TaskKind } from './types.ts';
import { parseClassNames, parseYoloLabels, toYoloLines } from './yolo.ts';
import { unzipFiles, zipDataset } from './zip.ts';
import { smartResize } from '../image.ts';

const OPTS = { minPixels: 56 * 56, maxPixels: 28 * 28 * 1280 };
const enc = (s: string) => new TextEncoder().encode(s);
const txt = (path: string, s: string) => sourceFromBytes(path, enc(s));
const png = (path: string) => sourceFromBytes(path, new Uint8Array([137, 80, 78, 71]), 'image/png');

function img(id: string, name: string, width: number, height: number, labels: Partial<ImageRecord['labels']> = {}, scale = 1): ImageRecord {
  return {
    id, datasetId: 'ds', name, type: 'image/png', width, height, origWidth: Math.round(width * scale), origHeight: Math.round(height * scale), scale,
    bytes: 4, order: 0, addedAt: 0, labels: { ...emptyLabels(), ...labels },
  };
}
function box(x1: number, y1: number, x2: number, y2: number, label = 'cat', question = ''): Box {
  return { id: `b${x1}${y1}`, x1, y1, x2, y2, label, question };
}
function ds(kind: TaskKind, extra: Partial<DatasetMeta> = {}): DatasetMeta {
  return { ...newDataset('t', kind, 0), ...OPTS, ...extra };
}

describe('jsonl', () => {
  it('reports malformed lines by number and keeps the good ones', () => {
    const text = ['{"a": 1}', '{"a": 2', '', '[1, 2]', '{"a": 3}', 'not json', '\uFEFF'].join('\n');
    const { records, errors } = parseJsonl('\uFEFF' + text, 'd.jsonl');
    expect(records.map((r) => r.line)).toEqual([1, 5]);
    expect(errors.map((e) => e.line)).toEqual([2, 4, 6]);
    expect(errors[0].reason).toMatch(/invalid JSON/);
    expect(errors[1].reason).toMatch(/array/);
    expect(formatError(errors[0])).toMatch(/^d\.jsonl line 2: invalid JSON/);
  });
  it('reads JSON arrays by item and JSONL mis-named .json', () => {
    expect(parseJsonArray('[{"a":1}, 2, {"b":2}]').records.map((r) => r.line)).toEqual([1, 3]);
    expect(parseJsonArray('[{"a":1}, 2]').errors[0].line).toBe(2);
    expect(parseJsonArray('{"a":1}\n{"a":2}\n').records.length).toBe(2);
    expect(toJsonl([{ a: 1 }, { b: 2 }])).toBe('{"a":1}\n{"b":2}\n');
  });
});

describe('coords', () => {
  it('COCO xywh and YOLO cxcywh convert to xyxy and back', () => {
    expect(xywhToXyxy([10, 20, 30, 40])).toEqual({ x1: 10, y1: 20, x2: 40, y2: 60 });
    expect(xyxyToXywh({ x1: 10, y1: 20, x2: 40, y2: 60 })).toEqual([10, 20, 30, 40]);
    expect(cxcywhToXyxy([0.5, 0.5, 0.2, 0.4])).toEqual({ x1: 0.4, y1: 0.3, x2: 0.6, y2: 0.7 });
    const b = cxcywhToXyxy([0.3, 0.6, 0.2, 0.1]);
    xyxyToCxcywh(b).forEach((v, i) => expect(v).toBeCloseTo([0.3, 0.6, 0.2, 0.1][i], 12));
  });
  it('resized frame is smart_resize of the file with the given min/max pixels', () => {
    // 1000x500 → 28-multiples: w 1008, h 504 (fits under max 1003520).
    const [rh, rw] = smartResize(500, 1000, 28, OPTS.minPixels, OPTS.maxPixels);
    expect([rh, rw]).toEqual([504, 1008]);
    const r = fromFilePixels({ x1: 100, y1: 50, x2: 500, y2: 250 }, 'resized', 1000, 500, OPTS);
    expect(r).toEqual({ x1: Math.round(100 * 1.008), y1: Math.round(50 * 1.008), x2: 504, y2: 252 });
    // A big image is scaled down under max_pixels.
    const big = fromFilePixels({ x1: 0, y1: 0, x2: 4000, y2: 3000 }, 'resized', 4000, 3000, OPTS);
    const [bh, bw] = smartResize(3000, 4000, 28, OPTS.minPixels, OPTS.maxPixels);
    expect(big).toEqual({ x1: 0, y1: 0, x2: bw, y2: bh });
    expect(bw * bh).toBeLessThanOrEqual(OPTS.maxPixels);
  });
  it('round trips every frame within its rounding', () => {
    const sizes: [number, number][] = [[640, 480], [1000, 500], [3999, 2001], [37, 911], [4096, 4096]];
    const frames: [BoxFrame, (w: number, h: number) => number][] = [
      ['abs', () => 0.005 + 1e-9],
      ['norm1', (w, h) => Math.max(w, h) * 5e-7 + 1e-9],
      ['norm1000', (w, h) => Math.max(w, h) / 1000 / 2 + 1e-9],
      ['resized', (w, h) => {
        const [rh, rw] = smartResize(h, w, 28, OPTS.minPixels, OPTS.maxPixels);
        return Math.max(w / rw, h / rh) / 2 + 1e-9;
      }],
    ];
    let seed = 7;
    const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    for (const [w, h] of sizes) {
      for (const [frame, tol] of frames) {
        for (let k = 0; k < 20; k++) {
          const x1 = rnd() * w * 0.8, y1 = rnd() * h * 0.8;
          const b = { x1, y1, x2: x1 + 2 + rnd() * (w - x1 - 2), y2: y1 + 2 + rnd() * (h - y1 - 2) };
          const back = toFilePixels(fromFilePixels(b, frame, w, h, OPTS), frame, w, h, OPTS);
          for (const key of ['x1', 'y1', 'x2', 'y2'] as const) expect(Math.abs(back[key] - b[key])).toBeLessThanOrEqual(tol(w, h));
        }
      }
    }
  });
  it('normalizes and clamps', () => {
    expect(normalizeBox({ x1: 50, y1: -5, x2: 10, y2: 500 }, 100, 200)).toEqual({ x1: 10, y1: 0, x2: 50, y2: 200 });
  });
});

describe('grounding answers', () => {
  it('formats boxes as Qwen2.5-VL writes them (fenced list) and parses them back', () => {
    const one = formatGroundingAnswer([{ x1: 1, y1: 2, x2: 3, y2: 4, label: 'cat' }]);
    expect(one).toBe('```json\n[\n\t{"bbox_2d": [1, 2, 3, 4], "label": "cat"}\n]\n```');
    expect(parseGroundingAnswer(one)).toEqual([{ x1: 1, y1: 2, x2: 3, y2: 4, label: 'cat' }]);
    expect(parseGroundingAnswer('{"bbox_2d":[1,2,3,4],"label":"cat"}')).toEqual([{ x1: 1, y1: 2, x2: 3, y2: 4, label: 'cat' }]);
    const two = formatGroundingAnswer([{ x1: 1, y1: 2, x2: 3, y2: 4, label: 'a' }, { x1: 5, y1: 6, x2: 7, y2: 8, label: 'b' }]);
    expect(parseGroundingAnswer(two)?.map((b) => b.label)).toEqual(['a', 'b']);
  });
  it('reads fenced, prose-wrapped and slightly broken answers; refuses text', () => {
    expect(parseGroundingAnswer('```json\n[\n {"bbox_2d": [10, 20, 30, 40], "label": "dog"}\n]\n```')?.[0]).toEqual({ x1: 10, y1: 20, x2: 30, y2: 40, label: 'dog' });
    expect(parseGroundingAnswer('Sure: {"bbox_2d": [1, 2, 3, 4], "label": "x"}, and {"bbox_2d": [5,6,7,8], "label": "y",} done')?.length).toBe(2);
    expect(parseGroundingAnswer('A cat on a mat.')).toBeNull();
    expect(parseGroundingAnswer('{"bbox_2d": [1, 2, 3], "label": "x"}')).toBeNull();
  });
});

describe('parseRecord', () => {
  const ok = (v: Record<string, unknown>, opts = { answerFrame: 'resized' as BoxFrame }) => {
    const r = parseRecord(v, 'f.jsonl', 3, opts);
    if ('error' in r) throw new Error(r.error.reason);
    return r.sample;
  };
  const err = (v: Record<string, unknown>) => {
    const r = parseRecord(v, 'f.jsonl', 3);
    if (!('error' in r)) throw new Error('expected an error');
    return r.error;
  };
  it('ms-swift messages with a bbox_2d answer → grounding in the resized frame', () => {
    const s = ok({ messages: [{ role: 'system', content: 'sys' }, { role: 'user', content: '<image>Where is the cat?' }, { role: 'assistant', content: '{"bbox_2d": [1, 2, 30, 40], "label": "cat"}' }], images: ['a.png'] });
    expect(s).toMatchObject({ kind: 'grounding', image: 'a.png', question: 'Where is the cat?' });
    expect(s.boxes).toEqual([{ x1: 1, y1: 2, x2: 30, y2: 40, frame: 'resized', label: 'cat', question: 'Where is the cat?', answer: '{"bbox_2d": [1, 2, 30, 40], "label": "cat"}' }]);
    expect(ok({ query: '<image>Q', response: '[{"bbox_2d": [1,2,3,4], "label": "a"}]', image: 'x.png' }, { answerFrame: 'abs' }).boxes[0].frame).toBe('abs');
  });
  it('ms-swift query/response VQA and rejected_response DPO', () => {
    expect(ok({ query: '<image>What is it?', response: 'A cat.', images: ['a.png'] })).toMatchObject({ kind: 'vqa', question: 'What is it?', answer: 'A cat.' });
    expect(ok({ messages: [{ role: 'user', content: '<image>Q' }, { role: 'assistant', content: 'good' }], rejected_response: 'bad', images: ['a.png'] })).toMatchObject({ kind: 'preference', question: 'Q', chosen: 'good', rejected: 'bad' });
  });
  it('ms-swift objects fill <ref-object> and <bbox> in order (absolute original pixels)', () => {
    const s = ok({
      messages: [{ role: 'user', content: '<image>Find the <ref-object> in the image' }, { role: 'assistant', content: '<bbox><bbox>' }],
      images: ['xxx/x.jpg'],
      objects: { ref: ['sheep'], bbox: [[90.9, 160.8, 135, 212.8], [360.9, 480.8, 495, 532.8]] },
    });
    expect(s.kind).toBe('grounding');
    expect(s.question).toBe('Find the sheep in the image');
    expect(s.boxes.map((b) => [b.x1, b.label, b.frame, b.question])).toEqual([[90.9, 'sheep', 'abs', 'Find the sheep in the image'], [360.9, 'sheep', 'abs', 'Find the sheep in the image']]);
    const n = ok({ messages: [{ role: 'user', content: '<image>Describe' }, { role: 'assistant', content: '<ref-object><bbox> and <ref-object><bbox>' }], images: ['x.jpg'], objects: { ref: ['a dog', 'a woman'], bbox: [[1, 2, 3, 4], [5, 6, 7, 8]], bbox_type: 'norm1000' } });
    expect(n.boxes.map((b) => [b.label, b.frame])).toEqual([['a dog', 'norm1000'], ['a woman', 'norm1000']]);
    expect(err({ messages: [{ role: 'user', content: 'x' }], images: ['a'], objects: { ref: [], bbox: [[1, 2, 3]] } }).reason).toBe('objects.bbox[0] must be 4 numbers [x1, y1, x2, y2], got [1,2,3]');
  });
  it('LLaMA-Factory sharegpt (conversations, from/value) and its preference form', () => {
    expect(ok({ conversations: [{ from: 'human', value: '<image>Caption?' }, { from: 'gpt', value: 'A dog.' }], images: ['d.png'] })).toMatchObject({ kind: 'vqa', question: 'Caption?', answer: 'A dog.' });
    expect(ok({ conversations: [{ from: 'human', value: '<image>Q' }], chosen: { from: 'gpt', value: 'yes' }, rejected: { from: 'gpt', value: 'no' }, images: ['d.png'] })).toMatchObject({ kind: 'preference', chosen: 'yes', rejected: 'no' });
  });
  it('trl conversational preference and prompt-only RL', () => {
    const user = { role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'Which?' }] };
    expect(ok({ prompt: [user], chosen: [{ role: 'assistant', content: [{ type: 'text', text: 'A' }] }], rejected: [{ role: 'assistant', content: [{ type: 'text', text: 'B' }] }], images: ['p.png'] })).toMatchObject({ kind: 'preference', question: 'Which?', chosen: 'A', rejected: 'B' });
    const rl = ok({ prompt: [user], images: ['p.png'], solution: '{"bbox_2d": [1,2,3,4], "label": "x"}' });
    expect(rl.kind).toBe('rl');
    expect(rl.boxes.length).toBe(1);
    expect(ok({ prompt: [user], images: ['p.png'], solution: 'forty-two' })).toMatchObject({ kind: 'rl', answer: 'forty-two' });
  });
  it('explains bad records', () => {
    expect(err({ messages: [{ role: 'user', content: 'x' }] }).reason).toMatch(/no image/);
    expect(err({ messages: [{ role: 'wizard', content: 'x' }], images: ['a'] }).reason).toMatch(/unknown role "wizard"/);
    expect(err({ foo: 1, images: ['a'] }).reason).toMatch(/unknown record shape/);
    expect(err({ messages: [{ role: 'user', content: 'x' }], chosen: 'a', rejected: '', images: ['a'] }).reason).toBe('the rejected answer is empty');
    expect(err({ images: [3], query: 'q' }).reason).toBe('"images"[0] must be a path string (or {"path": ...}), got 3');
    expect(err({ line: 3 } as Record<string, unknown>).line).toBe(3);
  });
});

describe('COCO and YOLO', () => {
  it('COCO [x,y,w,h] → x1y1x2y2 with categories; bad annotations reported', () => {
    const c = parseCoco({
      images: [{ id: 1, file_name: 'a.jpg', width: 100, height: 50 }],
      annotations: [{ id: 1, image_id: 1, category_id: 3, bbox: [10, 5, 20, 10] }, { id: 2, image_id: 9, category_id: 3, bbox: [1, 1, 1, 1] }, { id: 3, image_id: 1, bbox: [1, 2] }],
      categories: [{ id: 3, name: 'car' }],
    }, 'ann.json');
    expect(c.samples[0].boxes).toEqual([{ x1: 10, y1: 5, x2: 30, y2: 15, frame: 'abs', label: 'car', question: '' }]);
    expect(c.samples[0].stated).toEqual([100, 50]);
    expect(c.errors.map((e) => e.line)).toEqual([2, 3]);
    expect(c.classes).toEqual(['car']);
  });
  it('COCO export parses back to the same boxes', () => {
    const im = img('i1', 'a.png', 200, 100, { boxes: [box(10, 20, 50, 60, 'car'), box(0, 0, 200, 100, '')] });
    const coco = toCoco([{ path: 'images/a.png', img: im }], ['car']);
    const back = parseCoco(coco, 'c.json');
    expect(back.samples[0].boxes.map((b) => [b.x1, b.y1, b.x2, b.y2, b.label])).toEqual([[10, 20, 50, 60, 'car'], [0, 0, 200, 100, 'object']]);
  });
  it('YOLO lines (normalized cx cy w h) → norm1 boxes; bad lines by number', () => {
    const y = parseYoloLabels('0 0.5 0.5 0.2 0.4\n\n1 0.1 0.1\n7 0.5 0.5 0.1 0.1\n0 0.5 0.5 -1 0.1\n', 'labels/a.txt', 'images/a.png', ['cat', 'dog']);
    expect(y.sample.boxes.map((b) => b.label)).toEqual(['cat', '7']);
    expect(y.sample.boxes[0]).toMatchObject({ frame: 'norm1' });
    expect(y.sample.boxes[0].x1).toBeCloseTo(0.4);
    expect(y.errors.map((e) => e.line)).toEqual([3, 5]);
    expect(parseClassNames('names: [cat, "dog"]\n', 'data.yaml')).toEqual(['cat', 'dog']);
    expect(parseClassNames('names:\n  0: cat\n  1: dog\n', 'data.yaml')).toEqual(['cat', 'dog']);
    const classes = ['cat'];
    expect(toYoloLines(img('i', 'a.png', 200, 100, { boxes: [box(20, 10, 60, 50, 'dog')] }), classes)).toBe('1 0.2 0.3 0.2 0.4');
    expect(classes).toEqual(['cat', 'dog']);
  });
});

describe('task records', () => {
  it('grounding groups boxes by question, answers in the resized frame', () => {
    const im = img('i', 'a.png', 1000, 500, { boxes: [box(100, 50, 500, 250, 'cat', 'Where are the pets?'), box(0, 0, 10, 10, 'dog', 'Where are the pets?'), box(10, 10, 20, 20, 'car')] });
    const recs = taskRecords(ds('grounding'), im);
    expect(recs.length).toBe(2);
    expect(recs[0]).toMatchObject({ kind: 'sft', question: 'Where are the pets?' });
    const json = (s: string) => JSON.parse(s.replace(/^```json\n|\n```$/g, ''));
    expect(json((recs[0] as { answer: string }).answer)).toEqual([{ bbox_2d: [101, 50, 504, 252], label: 'cat' }, { bbox_2d: [0, 0, 10, 10], label: 'dog' }]);
    expect(recs[1]).toMatchObject({ question: 'Locate the car in the image and output its bbox coordinates in JSON format.' });
    expect(json((recs[1] as { answer: string }).answer)).toEqual([{ bbox_2d: [10, 10, 20, 20], label: 'car' }]);
  });
  it('vqa, preference and rl records need their fields', () => {
    expect(taskRecords(ds('vqa'), img('i', 'a', 100, 100, { answer: 'x' }))).toEqual([{ kind: 'sft', question: 'Describe this image.', answer: 'x' }]);
    expect(taskRecords(ds('vqa'), img('i', 'a', 100, 100))).toEqual([]);
    expect(taskRecords(ds('preference'), img('i', 'a', 100, 100, { question: 'Q', chosen: 'c' }))).toEqual([]);
    expect(taskRecords(ds('preference'), img('i', 'a', 100, 100, { question: 'Q', chosen: 'c', rejected: 'r' }))).toEqual([{ kind: 'preference', prompt: 'Q', chosen: 'c', rejected: 'r' }]);
    const rl = taskRecords(ds('rl'), img('i', 'a', 280, 280, { question: 'Find it', boxes: [box(28, 28, 56, 56, 'x')] }));
    expect(rl).toEqual([{ kind: 'rl', prompt: 'Find it', reward: 'iou', reference: '```json\n[\n\t{"bbox_2d": [28, 28, 56, 56], "label": "x"}\n]\n```', boxes: [{ x1: 28, y1: 28, x2: 56, y2: 56, label: 'x' }] }]);
    expect(taskRecords(ds('rl', { reward: 'exact' }), img('i', 'a', 100, 100, { question: 'Q', answer: '4' }))).toEqual([{ kind: 'rl', prompt: 'Q', reward: 'exact', reference: '4' }]);
  });
});

describe('labelsForImage', () => {
  const sample = (boxes: ParsedSample['boxes'], extra: Partial<ParsedSample> = {}): ParsedSample => ({ file: 'f', line: 1, image: 'a.png', kind: 'grounding', question: '', answer: '', chosen: '', rejected: '', boxes, ...extra });
  it('converts each frame into stored pixels, dividing by the downscale', () => {
    const s = sample([
      { x1: 0.1, y1: 0.2, x2: 0.5, y2: 0.6, frame: 'norm1', label: 'a', question: '' },
      { x1: 100, y1: 200, x2: 500, y2: 600, frame: 'norm1000', label: 'b', question: '' },
      { x1: 800, y1: 400, x2: 1600, y2: 1200, frame: 'abs', label: 'c', question: 'q' },
    ]);
    const { labels } = labelsForImage([s], { fileWidth: 8000, fileHeight: 4000, scale: 8000 / 4096 }, OPTS);
    const k = 4096 / 8000;
    expect(labels[0].boxes.map((b) => [b.x1, b.y1, b.x2, b.y2])).toEqual([
      [800 * k, 800 * k, 4000 * k, 2400 * k],
      [800 * k, 800 * k, 4000 * k, 2400 * k],
      [800 * k, 400 * k, 1600 * k, 1200 * k],
    ].map((r) => r.map((v) => Math.round(v * 100) / 100)));
    expect(labels[0].boxes[2].question).toBe('q');
  });
  it('clamps, refuses tiny boxes, rescales COCO boxes when the file differs from the stated size', () => {
    const r = labelsForImage([sample([
      { x1: -10, y1: -10, x2: 50, y2: 50, frame: 'abs', label: 'a', question: '' },
      { x1: 10, y1: 10, x2: 11, y2: 30, frame: 'abs', label: 'tiny', question: '' },
      { x1: 150, y1: 10, x2: 300, y2: 30, frame: 'abs', label: 'out', question: '' },
    ])], { fileWidth: 100, fileHeight: 100, scale: 1 }, OPTS);
    expect(r.labels[0].boxes.map((b) => [b.x1, b.y1, b.x2, b.y2])).toEqual([[0, 0, 50, 50]]);
    expect(r.warnings.join('\n')).toMatch(/smaller than 2 px/);
    expect(r.warnings).toContain('2 boxes reached outside the image and were clamped to it: f line 1 [-10, -10, 50, 50]; f line 1 [150, 10, 300, 30]');
    const swapped = labelsForImage([sample([{ x1: 50, y1: 10, x2: 40, y2: 20, frame: 'abs', label: 'a', question: '' }, { x1: 1, y1: NaN, x2: 5, y2: 9, frame: 'abs', label: 'b', question: '' }])], { fileWidth: 100, fileHeight: 100, scale: 1 }, OPTS);
    expect(swapped.labels[0].boxes).toEqual([]);
    expect(swapped.warnings).toEqual(['f line 1: box [50, 10, 40, 20]: x1 50 must be less than x2 40; skipped', 'f line 1: box [1, NaN, 5, 9]: y1 is not a finite number; skipped']);
    const c = labelsForImage([sample([{ x1: 10, y1: 10, x2: 20, y2: 20, frame: 'abs', label: 'a', question: '' }], { stated: [50, 50] })], { fileWidth: 100, fileHeight: 100, scale: 1 }, OPTS);
    expect(c.labels[0].boxes[0]).toMatchObject({ x1: 20, y1: 20, x2: 40, y2: 40 });
  });
  it('merges grounding samples into one image; a second text sample becomes a copy', () => {
    const g = labelsForImage([sample([{ x1: 1, y1: 1, x2: 9, y2: 9, frame: 'abs', label: 'a', question: 'q1' }]), sample([{ x1: 2, y1: 2, x2: 8, y2: 8, frame: 'abs', label: 'b', question: 'q2' }])], { fileWidth: 10, fileHeight: 10, scale: 1 }, OPTS);
    expect(g.labels.length).toBe(1);
    expect(g.labels[0].boxes.length).toBe(2);
    const v = labelsForImage([sample([], { kind: 'vqa', question: 'Q1', answer: 'A1' }), sample([], { kind: 'vqa', question: 'Q2', answer: 'A2' })], { fileWidth: 10, fileHeight: 10, scale: 1 }, OPTS);
    expect(v.labels.map((l) => [l.question, l.answer])).toEqual([['Q1', 'A1'], ['Q2', 'A2']]);
  });
});

describe('planImport', () => {
  it('imports the good lines of a JSONL and reports malformed ones by line number', async () => {
    const jsonl = [
      '{"messages": [{"role": "user", "content": "<image>Q1"}, {"role": "assistant", "content": "A1"}], "images": ["images/a.png"]}',
      '{"messages": [{"role": "user", "content": "<image>Q2"}, ',
      '{"query": "<image>Q3", "response": "A3", "images": ["b.png"]}',
      '{"query": "<image>Q4", "response": "A4", "images": ["missing.png"]}',
      '{"messages": "oops", "images": ["c.png"]}',
      '{"query": "<image>Q6", "response": "A6", "images": ["c.png"]}',
    ].join('\n');
    const plan = await planImport([txt('data.jsonl', jsonl), png('images/a.png'), png('images/b.png'), png('c.png'), txt('README.md', 'hi'), txt('.DS_Store', '')]);
    expect(plan.errors.map((e) => e.line).sort()).toEqual([2, 4, 5]);
    expect(plan.errors.find((e) => e.line === 4)?.reason).toMatch(/missing\.png" not found/);
    expect(plan.images.map((p) => [p.file.path, p.samples.map((s) => s.answer)])).toEqual([['c.png', ['A6']], ['images/a.png', ['A1']], ['images/b.png', ['A3']]]);
    expect(plan.kind).toBe('vqa');
    expect(plan.skipped).toEqual([{ path: 'README.md', reason: 'not an image or a dataset file' }]);
  });
  it('COCO and YOLO files attach boxes to their images; data: URIs become images', async () => {
    const coco = JSON.stringify({ images: [{ id: 1, file_name: 'x/a.png', width: 10, height: 10 }], annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [1, 1, 5, 5] }], categories: [{ id: 1, name: 'dot' }] });
    const p1 = await planImport([txt('ann.json', coco), png('imgs/a.png')]);
    expect(p1.images[0].samples[0].boxes.length).toBe(1);
    expect(p1.classes).toEqual(['dot']);
    const p2 = await planImport([txt('classes.txt', 'cat\ndog\n'), txt('labels/a.txt', '1 0.5 0.5 0.5 0.5\n'), png('images/a.png'), txt('labels/zzz.txt', '0 0.5 0.5 0.1 0.1')]);
    expect(p2.images[0].samples[0].boxes[0].label).toBe('dog');
    expect(p2.skipped.map((s) => s.path)).toEqual(['labels/zzz.txt']);
    const p3 = await planImport([txt('d.jsonl', '{"query": "Q", "response": "A", "images": ["data:image/png;base64,iVBORw0KGgo="]}\n')]);
    expect(p3.images.length).toBe(1);
    expect(p3.images[0].file.type).toBe('image/png');
    expect(Array.from(await p3.images[0].file.bytes()).slice(0, 4)).toEqual([137, 80, 78, 71]);
  });
});

describe('export → import round trips', () => {
  const images = [
    img('i1', 'a.png', 1000, 500, { boxes: [box(100.5, 50.25, 500, 250, 'cat', 'Where is the cat?'), box(600, 100, 900, 400, 'dog')] }),
    img('i2', 'sub/b.png', 640, 480, { boxes: [box(10, 20, 300, 400, 'cat')] }),
    img('i3', 'c.png', 300, 300),
  ];
  async function roundTrip(d: DatasetMeta, list: ImageRecord[], format: ExportFormat, answerFrame: BoxFrame = 'resized') {
    const ex = exportDataset(d, list, format);
    const bytes = new Map<string, Uint8Array>();
    for (const im of list) bytes.set(ex.imagePaths.get(im.id)!, new Uint8Array([137, 80, 78, 71]));
    const zip = zipDataset(ex.files, bytes);
    const plan = await planImport([sourceFromBytes('export.zip', zip)], { answerFrame });
    expect(plan.errors).toEqual([]);
    const out = new Map<string, ImageRecord['labels'][]>();
    for (const p of plan.images) {
      const orig = list.find((im) => ex.imagePaths.get(im.id) === p.file.path)!;
      out.set(orig.id, labelsForImage(p.samples, { fileWidth: orig.width, fileHeight: orig.height, scale: 1 }, d).labels);
    }
    return { ex, plan, out };
  }
  const tolFor = (im: ImageRecord, d: DatasetMeta, format: ExportFormat) => {
    if (format === 'swift-objects' || format === 'coco' || format === 'patchwork') return 0.0051;
    if (format === 'yolo') return 1e-3;
    const [rh, rw] = smartResize(im.height, im.width, 28, d.minPixels, d.maxPixels);
    return Math.max(im.width / rw, im.height / rh) / 2 + 1e-6;
  };
  for (const format of ['swift', 'swift-query', 'swift-objects', 'sharegpt', 'trl', 'coco', 'yolo', 'patchwork'] as ExportFormat[]) {
    it(`grounding via ${format}`, async () => {
      const d = ds('grounding', { classes: ['cat', 'dog'] });
      const { out, plan } = await roundTrip(d, images, format);
      expect(plan.kind).toBe('grounding');
      for (const im of images) {
        const got = out.get(im.id)![0].boxes;
        expect(got.length).toBe(im.labels.boxes.length);
        got.forEach((b, i) => {
          const e = im.labels.boxes[i];
          for (const k of ['x1', 'y1', 'x2', 'y2'] as const) expect(Math.abs(b[k] - e[k])).toBeLessThanOrEqual(tolFor(im, d, format));
          expect(b.label).toBe(e.label);
          if (!['coco', 'yolo'].includes(format)) expect(b.question || 'default').toBe(e.question || (format === 'patchwork' ? 'default' : b.question));
        });
      }
      if (format === 'swift' || format === 'sharegpt' || format === 'trl' || format === 'swift-query') {
        // Questions come back (the default one spelled out).
        expect(out.get('i1')![0].boxes[0].question).toBe('Where is the cat?');
        expect(out.get('i1')![0].boxes[1].question).toMatch(/Locate the dog/);
      }
    });
  }
  it('the answer frame option reads absolute-pixel bbox_2d answers', async () => {
    const abs = img('i', 'a.png', 1000, 500);
    const line = JSON.stringify({ messages: [{ role: 'user', content: '<image>Q' }, { role: 'assistant', content: '{"bbox_2d": [100, 50, 500, 250], "label": "x"}' }], images: ['a.png'] });
    const plan = await planImport([txt('d.jsonl', line), png('a.png')], { answerFrame: 'abs' });
    const l = labelsForImage(plan.images[0].samples, { fileWidth: abs.width, fileHeight: abs.height, scale: 1 }, OPTS).labels[0];
    expect(l.boxes[0]).toMatchObject({ x1: 100, y1: 50, x2: 500, y2: 250 });
  });
  for (const format of ['swift', 'swift-query', 'sharegpt', 'trl', 'patchwork'] as ExportFormat[]) {
    it(`vqa and preference via ${format}`, async () => {
      const v = [img('i1', 'a.png', 100, 100, { question: 'What?', answer: 'A cat.' }), img('i2', 'b.png', 100, 100, { answer: 'Dog' })];
      const r1 = await roundTrip(ds('vqa'), v, format);
      expect(r1.plan.kind).toBe('vqa');
      expect(r1.out.get('i1')![0]).toMatchObject({ question: 'What?', answer: 'A cat.' });
      expect(r1.out.get('i2')![0]).toMatchObject({ answer: 'Dog' });
      const p = [img('i1', 'a.png', 100, 100, { question: 'Better?', chosen: 'yes', rejected: 'no' })];
      const r2 = await roundTrip(ds('preference'), p, format);
      expect(r2.plan.kind).toBe('preference');
      expect(r2.out.get('i1')![0]).toMatchObject({ question: 'Better?', chosen: 'yes', rejected: 'no' });
    });
  }
  for (const format of ['swift', 'trl'] as ExportFormat[]) {
    it(`rl prompts via ${format}`, async () => {
      const r = [img('i1', 'a.png', 280, 280, { question: 'Find the cat', boxes: [box(28, 56, 140, 168, 'cat')] })];
      const res = await roundTrip(ds('rl'), r, format);
      expect(res.plan.kind).toBe('rl');
      expect(res.out.get('i1')![0]).toMatchObject({ question: 'Find the cat' });
      expect(res.out.get('i1')![0].boxes[0]).toMatchObject({ x1: 28, y1: 56, x2: 140, y2: 168 });
    });
  }
  it('export paths are unique and relative', () => {
    const p = exportPaths([img('1', 'a.png', 1, 1), img('2', 'A.png', 1, 1), img('3', '../x/a.png', 1, 1), img('4', '/abs/b.png', 1, 1)]);
    expect([...p.values()]).toEqual(['images/a.png', 'images/A_2.png', 'images/x/a.png', 'images/abs/b.png']);
  });
  it('sharegpt export writes a dataset_info.json; zip round trip keeps bytes', () => {
    const ex = exportDataset(ds('vqa'), [img('i', 'a.png', 10, 10, { answer: 'x' })], 'sharegpt');
    expect(ex.files.map((f) => f.path)).toEqual(['data.jsonl', 'dataset_info.json']);
    const z = unzipFiles(zipDataset(ex.files, new Map([['images/a.png', new Uint8Array([1, 2, 3])]])));
    expect(z.map((f) => f.path).sort()).toEqual(['data.jsonl', 'dataset_info.json', 'images/a.png']);
  });
});


describe('imageResolver', () => {
  it('matches exact paths, then file names preferring the longest common folder suffix', async () => {
    const { imageResolver } = await import('./import.ts');
    const files = ['a/x.png', 'b/x.png', 'c/d/y.png', 'z.PNG'].map((p) => sourceFromBytes(p, new Uint8Array(1)));
    const r = imageResolver(files);
    expect(r('a/x.png')?.path).toBe('a/x.png');
    expect(r('./b/x.png')?.path).toBe('b/x.png');
    expect(r('/data/set/b/x.png')?.path).toBe('b/x.png');
    expect(r('C:\\data\\c\\d\\y.png')?.path).toBe('c/d/y.png');
    expect(r('http://host/imgs/z.png')?.path).toBe('z.PNG');
    expect(r('q/x.png')?.path).toBe('a/x.png');
    expect(r('nope.png')).toBeUndefined();
  });
});

describe('answers kept as written (studio import → training records)', () => {
  const d = { ...newDataset('t', 'grounding', 0), ...OPTS };
  const answer = 'The spoon: {"bbox_2d": [325, 62, 425, 312]}';
  const read = () => {
    const r = parseRecord({ messages: [{ role: 'user', content: '<image>Where is the spoon?' }, { role: 'assistant', content: answer }], images: ['s.png'] }, 'd.jsonl', 1);
    if ('error' in r) throw new Error(r.error.reason);
    return labelsForImage([r.sample], { fileWidth: 700, fileHeight: 350, scale: 1 }, OPTS).labels[0];
  };
  it('trains and exports the imported text verbatim while its boxes are unchanged, no label invented', () => {
    const labels = read();
    expect(labels.boxes[0].label).toBe('');
    const recs = taskRecords(d, img('i', 's.png', 700, 350, labels));
    expect(recs).toEqual([{ kind: 'sft', question: 'Where is the spoon?', answer, boxes: [{ x1: 325, y1: 64.58, x2: 425, y2: 325, label: '' }] }]);
  });
  it('writes the boxes afresh (still without a label) once a box is edited', () => {
    const labels = read();
    labels.boxes[0] = { ...labels.boxes[0], x2: 450 };
    const [r] = taskRecords(d, img('i', 's.png', 700, 350, labels)) as { answer: string }[];
    expect(r.answer).toBe('```json\n[\n\t{"bbox_2d": [325, 62, 450, 312]}\n]\n```');
  });
  it('an answer read in another frame is not kept verbatim (its numbers are in the wrong frame)', () => {
    const r = parseRecord({ messages: [{ role: 'user', content: '<image>Q' }, { role: 'assistant', content: '{"bbox_2d": [325, 65, 425, 325]}' }], images: ['s.png'] }, 'd.jsonl', 1, { answerFrame: 'abs' });
    if ('error' in r) throw new Error(r.error.reason);
    const labels = labelsForImage([r.sample], { fileWidth: 700, fileHeight: 350, scale: 1 }, OPTS).labels[0];
    expect(labels.written).toBeUndefined();
    expect((taskRecords(d, img('i', 's.png', 700, 350, labels))[0] as { answer: string }).answer).toContain('{"bbox_2d": [325, 62, 425, 312]}');
  });
});

describe('re-import into a dataset', () => {
  it('mergeLabels adds new boxes, skips equal ones, fills empty answers and keeps a differing one apart', async () => {
    const { mergeLabels } = await import('./import.ts');
    const base = { ...emptyLabels(), boxes: [box(1, 2, 30, 40, 'cat', 'q')] };
    const same = mergeLabels(base, [{ ...emptyLabels(), boxes: [box(1.004, 2, 30, 40, 'cat', 'q')] }]);
    expect(same.added).toBe(0);
    expect(same.labels.boxes.length).toBe(1);
    const more = mergeLabels(base, [{ ...emptyLabels(), boxes: [box(1, 2, 30, 40, 'dog', 'q'), box(50, 50, 60, 60, 'cat', 'q')] }]);
    expect([more.added, more.labels.boxes.map((b) => b.label)]).toEqual([2, ['cat', 'dog', 'cat']]);
    const fill = mergeLabels(emptyLabels(), [{ ...emptyLabels(), question: 'Q', answer: 'A' }]);
    expect([fill.labels.question, fill.labels.answer, fill.extra]).toEqual(['Q', 'A', []]);
    const again = mergeLabels(fill.labels, [{ ...emptyLabels(), question: 'Q', answer: 'A' }, { ...emptyLabels(), question: 'Q', answer: 'B' }]);
    expect([again.added, again.extra.map((l) => l.answer)]).toEqual([0, ['B']]);
  });
  it('a JSONL alone labels images already in the dataset (stand-ins), a dropped file winning over a stored one', async () => {
    const line = (img: string) => JSON.stringify({ query: '<image>Q', response: 'A', images: [img] });
    const plan = await planImport([txt('more.jsonl', [line('a.png'), line('sub/b.png'), line('c.png')].join('\n')), png('c.png')], { answerFrame: 'resized', existing: [{ id: 'i1', name: 'a.png' }, { id: 'i2', name: 'x/b.png' }, { id: 'i3', name: 'c.png' }] });
    expect(plan.errors).toEqual([]);
    expect(plan.images.map((p) => [p.file.path, p.existingId, p.samples.length])).toEqual([['c.png', undefined, 1], ['a.png', 'i1', 1], ['x/b.png', 'i2', 1]]);
  });
});
