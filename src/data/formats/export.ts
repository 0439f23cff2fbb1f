// Dataset export. Every format writes image paths relative to the export root
// (`images/<name>`), the images being the stored Blobs. Coordinates per format:
//
// - swift (ms-swift messages), swift-query (query/response), sharegpt (LLaMA-Factory), trl:
//   grounding answers are Qwen2.5-VL `{"bbox_2d": [x1,y1,x2,y2], "label"}` in the RESIZED frame
//   (smart_resize of the stored image with the dataset's min/max pixels; integers). These files
//   train Qwen2.5-VL as is; train with the same min/max pixels (ms-swift MAX_PIXELS / LLaMA-Factory
//   image_max_pixels).
// - swift-objects (ms-swift grounding): `<ref-object>` / `<bbox>` placeholders and
//   "objects": {"ref": [...], "bbox": [[x1,y1,x2,y2]]} in ABSOLUTE pixels of the exported image
//   (bbox_type 'real'); ms-swift converts them to whatever frame the model uses.
// - coco: [x, y, w, h] absolute pixels of the exported image.   yolo: normalized cx cy w h.
// - patchwork: our own records as stored (boxes in stored pixels, plus the original size and
//   scale); lossless round trip.

import { toCoco } from './coco.ts';
import { toJsonl } from './jsonl.ts';
import { taskRecords, type TaskRecord } from './records.ts';
import { baseName, type DatasetMeta, type ImageRecord } from './types.ts';
import { toYoloLines } from './yolo.ts';

export type ExportFormat = 'swift' | 'swift-query' | 'swift-objects' | 'sharegpt' | 'trl' | 'coco' | 'yolo' | 'patchwork';

export const EXPORT_FORMATS: { format: ExportFormat; title: string; kinds: DatasetMeta['kind'][]; hint: string }[] = [
  { format: 'swift', title: 'ms-swift JSONL (messages)', kinds: ['grounding', 'vqa', 'preference', 'rl'], hint: 'bbox_2d in the resized frame; DPO as rejected_response; GRPO with solution' },
  { format: 'swift-query', title: 'ms-swift JSONL (query/response)', kinds: ['grounding', 'vqa', 'preference'], hint: 'bbox_2d in the resized frame' },
  { format: 'swift-objects', title: 'ms-swift grounding (<ref-object>/<bbox> + objects)', kinds: ['grounding'], hint: 'absolute pixels; ms-swift converts per model' },
  { format: 'sharegpt', title: 'LLaMA-Factory sharegpt', kinds: ['grounding', 'vqa', 'preference'], hint: '<image> token; bbox_2d in the resized frame' },
  { format: 'trl', title: 'trl conversational', kinds: ['grounding', 'vqa', 'preference', 'rl'], hint: 'messages / prompt+chosen+rejected / prompt+solution' },
  { format: 'coco', title: 'COCO detection JSON', kinds: ['grounding', 'rl'], hint: '[x, y, w, h] absolute pixels' },
  { format: 'yolo', title: 'YOLO txt + classes.txt', kinds: ['grounding', 'rl'], hint: 'normalized cx cy w h' },
  { format: 'patchwork', title: 'Patchwork (lossless)', kinds: ['grounding', 'vqa', 'preference', 'rl'], hint: 'everything as stored' },
];

export interface ExportFile {
  path: string;
  text: string;
}

export interface ExportResult {
  files: ExportFile[];
  /** image id → path inside the export */
  imagePaths: Map<string, string>;
  records: number;
  warnings: string[];
}

/** Unique `images/...` paths (same names from different folders or pastes get a suffix). */
export function exportPaths(images: ImageRecord[], dir = 'images/'): Map<string, string> {
  const used = new Set<string>();
  const out = new Map<string, string>();
  for (const img of images) {
    const clean = img.name.replace(/\\/g, '/').replace(/^(\.\/|\/)+/, '').replace(/\.\.\//g, '') || `${img.id}.png`;
    let p = dir + clean;
    for (let k = 2; used.has(p.toLowerCase()); k++) p = dir + clean.replace(/(\.[^./]*)?$/, `_${k}$1`);
    used.add(p.toLowerCase());
    out.set(img.id, p);
  }
  return out;
}

const userText = (q: string, token: boolean) => (token ? `<image>${q}` : q);

function swiftRecord(r: TaskRecord, path: string, query: boolean): Record<string, unknown> {
  if (query) {
    if (r.kind === 'sft') return { query: userText(r.question, true), response: r.answer, images: [path] };
    if (r.kind === 'preference') return { query: userText(r.prompt, true), response: r.chosen, rejected_response: r.rejected, images: [path] };
    return { query: userText(r.prompt, true), solution: r.reference, images: [path] };
  }
  if (r.kind === 'sft') {
    return { messages: [{ role: 'user', content: userText(r.question, true) }, { role: 'assistant', content: r.answer }], images: [path] };
  }
  if (r.kind === 'preference') {
    return { messages: [{ role: 'user', content: userText(r.prompt, true) }, { role: 'assistant', content: r.chosen }], rejected_response: r.rejected, images: [path] };
  }
  // GRPO in ms-swift: a prompt-only conversation; extra columns (solution) reach the reward functions.
  return { messages: [{ role: 'user', content: userText(r.prompt, true) }], solution: r.reference, reward: r.reward, images: [path] };
}

function swiftObjectsRecord(r: TaskRecord, path: string): Record<string, unknown> | null {
  if (r.kind !== 'sft' || !r.boxes) return null;
  const template = r.boxes.length === 1 ? '{"bbox_2d": <bbox>, "label": "<ref-object>"}' : `[${r.boxes.map(() => '{"bbox_2d": <bbox>, "label": "<ref-object>"}').join(', ')}]`;
  const r2 = (x: number) => Math.round(x * 100) / 100;
  return {
    messages: [{ role: 'user', content: userText(r.question, true) }, { role: 'assistant', content: template }],
    images: [path],
    objects: { ref: r.boxes.map((b) => b.label), bbox: r.boxes.map((b) => [r2(b.x1), r2(b.y1), r2(b.x2), r2(b.y2)]) },
  };
}

function sharegptRecord(r: TaskRecord, path: string): Record<string, unknown> | null {
  if (r.kind === 'sft') {
    return { messages: [{ role: 'user', content: userText(r.question, true) }, { role: 'assistant', content: r.answer }], images: [path] };
  }
  if (r.kind === 'preference') {
    return { conversations: [{ from: 'human', value: userText(r.prompt, true) }], chosen: { from: 'gpt', value: r.chosen }, rejected: { from: 'gpt', value: r.rejected }, images: [path] };
  }
  return null;
}

const trlUser = (text: string) => ({ role: 'user', content: [{ type: 'image' }, { type: 'text', text }] });
const trlAssistant = (text: string) => ({ role: 'assistant', content: [{ type: 'text', text }] });

function trlRecord(r: TaskRecord, path: string): Record<string, unknown> {
  if (r.kind === 'sft') return { messages: [trlUser(r.question), trlAssistant(r.answer)], images: [path] };
  if (r.kind === 'preference') return { prompt: [trlUser(r.prompt)], chosen: [trlAssistant(r.chosen)], rejected: [trlAssistant(r.rejected)], images: [path] };
  return { prompt: [trlUser(r.prompt)], images: [path], solution: r.reference, reward: r.reward };
}

export interface PatchworkFile {
  format: 'patchwork';
  version: 1;
  dataset: Omit<DatasetMeta, 'id' | 'deletedAt'>;
  images: (Omit<ImageRecord, 'datasetId' | 'deletedAt'> & { path: string })[];
}

export function exportDataset(ds: DatasetMeta, images: ImageRecord[], format: ExportFormat): ExportResult {
  const imagePaths = exportPaths(images);
  const warnings: string[] = [];
  const lines: unknown[] = [];
  const files: ExportFile[] = [];
  let skipped = 0;
  if (format === 'coco') {
    const list = images.map((img) => ({ path: imagePaths.get(img.id)!, img }));
    const coco = toCoco(list, ds.classes);
    files.push({ path: 'annotations.json', text: JSON.stringify(coco, null, 1) });
    return { files, imagePaths, records: (coco.annotations as unknown[]).length, warnings };
  }
  if (format === 'yolo') {
    const classes = [...ds.classes];
    let n = 0;
    for (const img of images) {
      const p = imagePaths.get(img.id)!.replace(/^images\//, 'labels/').replace(/\.[^./]*$/, '') + '.txt';
      const text = toYoloLines(img, classes);
      n += img.labels.boxes.length;
      files.push({ path: p, text: text ? text + '\n' : '' });
    }
    files.push({ path: 'classes.txt', text: classes.join('\n') + '\n' });
    return { files, imagePaths, records: n, warnings };
  }
  if (format === 'patchwork') {
    const { id: _id, deletedAt: _d, ...meta } = ds;
    const out: PatchworkFile = {
      format: 'patchwork',
      version: 1,
      dataset: meta,
      images: images.map(({ datasetId: _ds, deletedAt: _del, ...rest }) => ({ ...rest, path: imagePaths.get(rest.id)! })),
    };
    files.push({ path: 'patchwork.json', text: JSON.stringify(out) });
    return { files, imagePaths, records: images.length, warnings };
  }
  for (const img of images) {
    const path = imagePaths.get(img.id)!;
    const recs = taskRecords(ds, img);
    if (recs.length === 0) skipped++;
    for (const r of recs) {
      const v =
        format === 'swift' ? swiftRecord(r, path, false)
        : format === 'swift-query' ? swiftRecord(r, path, true)
        : format === 'swift-objects' ? swiftObjectsRecord(r, path)
        : format === 'sharegpt' ? sharegptRecord(r, path)
        : trlRecord(r, path);
      if (v) lines.push(v);
      else warnings.push(`${baseName(path)}: a ${r.kind} record has no ${format} form; skipped`);
    }
  }
  if (skipped) warnings.push(`${skipped} unlabelled image${skipped > 1 ? 's' : ''} wrote no record`);
  files.push({ path: 'data.jsonl', text: toJsonl(lines) });
  if (format === 'sharegpt') {
    // LLaMA-Factory needs a dataset_info.json entry naming the columns.
    const pref = ds.kind === 'preference';
    const info = {
      patchwork: pref
        ? { file_name: 'data.jsonl', formatting: 'sharegpt', ranking: true, columns: { messages: 'conversations', chosen: 'chosen', rejected: 'rejected', images: 'images' } }
        : { file_name: 'data.jsonl', formatting: 'sharegpt', columns: { messages: 'messages', images: 'images' }, tags: { role_tag: 'role', content_tag: 'content', user_tag: 'user', assistant_tag: 'assistant' } },
    };
    files.push({ path: 'dataset_info.json', text: JSON.stringify(info, null, 2) });
  }
  return { files, imagePaths, records: lines.length, warnings };
}
