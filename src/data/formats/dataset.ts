// A dataset file → records, for the CLI and any scripted run (the studio's import plans files with
// import.ts, on the same reader). Accepts what the studio exports and what the usual tools write:
// JSONL or a JSON array of ms-swift / LLaMA-Factory / trl records (the cluster bundle's data.jsonl
// included), COCO detection JSON, YOLO label files with their class names, and patchwork.json.
// Image paths are relative to the dataset file's folder (paths.ts). Every problem is returned, with
// the file and line (item / annotation number for JSON), and the good records are kept.

import { defaultQuestion, type DatasetMeta, type ImageRecord } from './types.ts';
import { isCoco, parseCoco } from './coco.ts';
import { isObj, parseJsonArray, parseJsonl, type LineError } from './jsonl.ts';
import { DEFAULT_PARSE_OPTS, readRecord, type DatasetRecord, type ParseOpts, type RecordBox } from './parse.ts';
import { resolveImagePath } from './paths.ts';
import { taskRecords } from './records.ts';
import type { PatchworkFile } from './export.ts';
import { isClassNamesFile, parseClassNames, parseYoloLabels, yoloImageFor } from './yolo.ts';
import type { ChatMessage } from '../template.ts';

export interface ParsedDataset {
  records: DatasetRecord[];
  problems: LineError[];
  warnings: string[];
}

const userTurn = (text: string): ChatMessage => ({ role: 'user', content: [{ type: 'image' }, { type: 'text', text }] });

/**
 * The text of one dataset file (`file` is its path: it names the file in messages and is the base
 * of relative image paths) → its records and every problem.
 */
export function parseDatasetFile(text: string, file: string, opts: ParseOpts = DEFAULT_PARSE_OPTS): ParsedDataset {
  const out: ParsedDataset = { records: [], problems: [], warnings: [] };
  if (/\.json$/i.test(file)) {
    let whole: unknown;
    try {
      whole = JSON.parse(text.replace(/^\uFEFF/, ''));
    } catch {
      /* JSONL saved as .json, or broken: parseJsonArray reports it */
    }
    if (isObj(whole) && whole.format === 'patchwork') return patchworkRecords(whole as unknown as PatchworkFile, file, out);
    if (isObj(whole) && isCoco(whole)) return cocoRecords(whole, file, out);
  }
  const parsed = /\.json$/i.test(file) ? parseJsonArray(text, file) : parseJsonl(text, file);
  out.problems.push(...parsed.errors);
  for (const r of parsed.records) {
    const res = readRecord(r.value as Record<string, unknown>, file, r.line, opts);
    out.problems.push(...res.problems);
    out.warnings.push(...res.warnings);
    if (res.record) out.records.push(res.record);
  }
  if (!parsed.records.length && !parsed.errors.length) out.problems.push({ file, line: 0, reason: 'no records: the file is empty' });
  return out;
}

/** Grounding records made from boxes alone (COCO, YOLO): one per label, asking for that label. */
function boxRecords(file: string, line: number, image: string, boxes: RecordBox[]): DatasetRecord[] {
  const byLabel = new Map<string, RecordBox[]>();
  for (const b of boxes) byLabel.set(b.label, [...(byLabel.get(b.label) ?? []), b]);
  return [...byLabel].map(([label, bs]) => {
    const question = defaultQuestion(label);
    return {
      file, line, images: [image], written: [image], kind: 'sft' as const, messages: [userTurn(question)],
      boxes: bs.map((b) => ({ ...b, question })), answerFrame: 'resized' as const, fromBoxes: true,
    };
  });
}

function cocoRecords(v: Record<string, unknown>, file: string, out: ParsedDataset): ParsedDataset {
  const c = parseCoco(v, file);
  out.problems.push(...c.errors);
  for (const s of c.samples) {
    if (!s.boxes.length) continue;
    const r = resolveImagePath(s.image, file);
    if (r.error !== undefined) {
      out.problems.push({ file, line: s.line, reason: r.error });
      continue;
    }
    out.records.push(...boxRecords(file, s.line, r.path, s.boxes.map((b, i) => ({ ...b, where: `annotation of ${s.image} #${i + 1}` }))));
  }
  return out;
}

/**
 * YOLO: one label file (`labels/a.txt`) for the image at `image` (a path relative to the import
 * root, found by the caller) with the class names.
 */
export function parseYoloFile(text: string, file: string, image: string, classes: string[]): ParsedDataset {
  const y = parseYoloLabels(text, file, image, classes);
  return { records: y.sample.boxes.length ? boxRecords(file, 1, image, y.sample.boxes.map((b, i) => ({ ...b, where: `box ${i + 1}` }))) : [], problems: y.errors, warnings: [] };
}

function patchworkRecords(pw: PatchworkFile, file: string, out: ParsedDataset): ParsedDataset {
  const meta = pw.dataset as DatasetMeta;
  pw.images.forEach((rec, i) => {
    const r = resolveImagePath(rec.path, file);
    if (r.error !== undefined) return out.problems.push({ file, line: i + 1, reason: r.error });
    // Boxes are stored pixels of the exported image, so taskRecords writes them in its resized
    // frame; the records then go through the one reader like any trl line.
    for (const t of taskRecords(meta, rec as unknown as ImageRecord)) {
      const user = { role: 'user', content: [{ type: 'image' }, { type: 'text', text: t.kind === 'sft' ? t.question : t.prompt }] };
      const value =
        t.kind === 'sft' ? { messages: [user, { role: 'assistant', content: t.answer }] }
        : t.kind === 'preference' ? { prompt: [user], chosen: t.chosen, rejected: t.rejected }
        : { prompt: [user], solution: t.reference };
      const res = readRecord({ ...value, images: [rec.path] }, file, i + 1);
      out.problems.push(...res.problems);
      if (res.record) out.records.push(res.record);
    }
  });
  return out;
}

/**
 * A dataset folder (or an unzipped export): its annotation files with their text and the paths of
 * its images → every record and problem. JSONL / JSON / COCO / patchwork files are read as
 * parseDatasetFile does; YOLO label files (`labels/*.txt`) go with the image of the same stem and
 * the class names of classes.txt / obj.names / data.yaml. Paths are relative to the folder.
 */
export function parseDatasetFolder(annotations: { path: string; text: string }[], images: string[], opts: ParseOpts = DEFAULT_PARSE_OPTS): ParsedDataset {
  const out: ParsedDataset = { records: [], problems: [], warnings: [] };
  let classes: string[] = [];
  for (const f of annotations) if (isClassNamesFile(f.path)) classes = parseClassNames(f.text, f.path);
  for (const f of annotations) {
    if (isClassNamesFile(f.path) || /(^|\/)dataset_info\.json$/i.test(f.path)) continue;
    let part: ParsedDataset;
    if (/\.txt$/i.test(f.path)) {
      const img = yoloImageFor(f.path, images, (p) => p);
      if (!img) {
        out.problems.push({ file: f.path, line: 0, reason: 'a YOLO label file with no image of the same name (labels/a.txt goes with images/a.png)' });
        continue;
      }
      part = parseYoloFile(f.text, f.path, img, classes);
    } else if (/\.(jsonl|json)$/i.test(f.path)) part = parseDatasetFile(f.text, f.path, opts);
    else continue;
    out.records.push(...part.records);
    out.problems.push(...part.problems);
    out.warnings.push(...part.warnings);
  }
  if (!annotations.some((f) => /\.(jsonl|json|txt)$/i.test(f.path) && !isClassNamesFile(f.path))) out.problems.push({ file: '', line: 0, reason: 'no dataset file (JSONL, JSON, COCO or YOLO labels) in the folder' });
  return out;
}
