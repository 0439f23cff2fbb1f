// Import planning: a bag of files (dropped, picked, or unzipped) → which images to add and which
// labels go with each. Pure (no DOM): files come as SourceFile, images are only named here; the
// store decodes them and then calls `labelsForImage` with the decoded size.
//
// Recognised files:
//   images (by extension or MIME type)          .zip (expanded in place; see zip.ts)
//   .jsonl / .json records (ms-swift, LLaMA-Factory, trl; see parse.ts)
//   .json COCO detection (coco.ts)               patchwork.json (our lossless export)
//   YOLO: <stem>.txt next to (or in labels/ beside images/) an image + classes.txt / obj.names / data.yaml
// Everything else is reported as skipped, by name.


import { parseCoco, isCoco } from './coco.ts';
import { boxShapeProblem } from '../bbox.ts';
import { normalizeBox, toFilePixels, type ResizeOpts } from './coords.ts';
import type { PatchworkFile } from './export.ts';
import { isObj, parseJsonArray, parseJsonl, type LineError } from './jsonl.ts';
import { DEFAULT_PARSE_OPTS, parseRecord, type ParsedSample, type ParseOpts } from './parse.ts';
import { isDataUri, resolveImagePath } from './paths.ts';
import { IMAGE_EXT, baseName, boxQuestion, emptyLabels, mimeOf, naturalCompare, stemName, uid, type Box, type Labels, type TaskKind } from './types.ts';
import { isClassNamesFile, parseClassNames, parseYoloLabels, yoloImageFor } from './yolo.ts';
import { unzipFiles } from './zip.ts';
import type { SourceFile } from './types.ts';

export type { SourceFile };


export function sourceFromBytes(path: string, data: Uint8Array, type = ''): SourceFile {
  return { path, size: data.length, type: type || mimeOf(path), bytes: async () => data };
}

export interface PlannedImage {
  /** the dropped file, or (existingId set) a stand-in named like the dataset's image */
  file: SourceFile;
  /** the records refer to this image already in the dataset (no file came with them) */
  existingId?: string;
  samples: ParsedSample[];
  /** from patchwork.json: the original size the image had before we stored it */
  orig?: { width: number; height: number };
}

export interface ImportPlan {
  images: PlannedImage[];
  errors: LineError[];
  warnings: string[];
  /** files neither image nor annotation */
  skipped: { path: string; reason: string }[];
  /** the kind most samples have, null when there are no labels */
  kind: TaskKind | null;
  classes: string[];
  /** settings carried by a patchwork.json */
  dataset?: PatchworkFile['dataset'];
  /** number of label records read */
  records: number;
}

export function isImageFile(f: { path: string; type: string }): boolean {
  return f.type.startsWith('image/') || IMAGE_EXT.test(f.path);
}

export function isAnnotationFile(path: string): boolean {
  return /\.(jsonl|json|txt|ya?ml|names|zip)$/i.test(path);
}

const IGNORED = /(^|\/)(\.[^/]*|__MACOSX\/.*|Thumbs\.db|desktop\.ini)$/i;

export interface PlanOpts extends ParseOpts {
  /** the open dataset's images: records naming one of them (and no dropped file) label it */
  existing?: { id: string; name: string }[];
}

export async function planImport(input: SourceFile[], opts: PlanOpts = DEFAULT_PARSE_OPTS): Promise<ImportPlan> {
  const errors: LineError[] = [];
  const warnings: string[] = [];
  const skipped: ImportPlan['skipped'] = [];
  const decoder = new TextDecoder();

  // Expand zips (one level, plus zips inside zips).
  const files: SourceFile[] = [];
  const queue = [...input];
  while (queue.length) {
    const f = queue.shift()!;
    if (IGNORED.test(f.path)) continue;
    if (/\.zip$/i.test(f.path)) {
      try {
        queue.push(...unzipFiles(await f.bytes()));
      } catch (e) {
        skipped.push({ path: f.path, reason: `not a readable zip (${(e as Error).message})` });
      }
    } else files.push(f);
  }

  const images = files.filter(isImageFile).sort((a, b) => naturalCompare(a.path, b.path));
  const dropped = imageResolver(images);
  // Images already in the dataset, as stand-ins: a JSONL may label them without bringing them again.
  const standIns = new Map<SourceFile, string>();
  for (const e of opts.existing ?? []) standIns.set({ path: e.name, size: 0, type: mimeOf(e.name), bytes: async () => { throw new Error(`${e.name} is already stored`); } }, e.id);
  const inDataset = imageResolver([...standIns.keys()]);
  const resolver = (ref: string) => dropped(ref) ?? inDataset(ref);
  const text = async (f: SourceFile) => decoder.decode(await f.bytes());

  const samples: ParsedSample[] = [];
  const origs = new Map<SourceFile, { width: number; height: number }>();
  let classes: string[] = [];
  let dataset: PatchworkFile['dataset'] | undefined;
  let records = 0;

  // Class names first (YOLO needs them).
  for (const f of files) {
    if (isClassNamesFile(f.path)) {
      const names = parseClassNames(await text(f), f.path);
      if (names.length) classes = names;
    }
  }
  const yoloTxt: SourceFile[] = [];
  for (const f of files) {
    if (isImageFile(f) || isClassNamesFile(f.path)) continue;
    const name = f.path;
    if (/\.jsonl$/i.test(name) || /\.json$/i.test(name)) {
      const t = await text(f);
      let parsed: { records: { line: number; value: unknown }[]; errors: LineError[] };
      if (/\.json$/i.test(name)) {
        let whole: unknown = undefined;
        try {
          whole = JSON.parse(t.replace(/^\uFEFF/, ''));
        } catch {
          /* maybe JSONL named .json */
        }
        if (isObj(whole) && whole.format === 'patchwork') {
          const pw = whole as unknown as PatchworkFile;
          dataset = pw.dataset;
          if (pw.dataset?.classes?.length) classes = pw.dataset.classes;
          pw.images.forEach((rec, i) => {
            records++;
            const at = resolveImagePath(rec.path, name);
            if (at.error !== undefined) return errors.push({ file: name, line: i + 1, reason: at.error });
            const s = fromPatchwork({ ...rec, path: at.path }, pw.dataset.kind, name, i + 1);
            samples.push(s);
            const img = resolver(at.path);
            if (img && rec.origWidth && rec.scale !== 1) origs.set(img, { width: rec.origWidth, height: rec.origHeight });
          });
          continue;
        }
        if (isObj(whole) && isCoco(whole)) {
          const c = parseCoco(whole, name);
          for (const s of c.samples) {
            if (!s.boxes.length && !resolver(s.image)) continue;
            const at = resolveImagePath(s.image, name);
            if (at.error !== undefined) errors.push({ file: name, line: s.line, reason: at.error });
            else samples.push({ ...s, image: at.path });
          }
          errors.push(...c.errors);
          records += c.samples.length;
          for (const k of c.classes) if (!classes.includes(k)) classes.push(k);
          continue;
        }
        if (isObj(whole) && /dataset_info\.json$/i.test(name)) continue; // LLaMA-Factory registry, nothing to import
        parsed = parseJsonArray(t, name);
      } else parsed = parseJsonl(t, name);
      errors.push(...parsed.errors);
      for (const r of parsed.records) {
        const res = parseRecord(r.value as Record<string, unknown>, name, r.line, opts);
        if ('error' in res) errors.push(...res.errors);
        else {
          records++;
          samples.push(res.sample);
          warnings.push(...res.warnings);
        }
      }
    } else if (/\.txt$/i.test(name)) {
      yoloTxt.push(f);
    } else {
      skipped.push({ path: f.path, reason: f.type ? `not an image (${f.type})` : 'not an image or a dataset file' });
    }
  }

  // YOLO label files: match by stem, preferring labels/ ↔ images/ siblings.
  for (const f of yoloTxt) {
    const img = yoloImageFor(f.path, images, (im) => im.path);
    if (!img) {
      skipped.push({ path: f.path, reason: 'a .txt with no image of the same name (YOLO labels need their image)' });
      continue;
    }
    const t = await text(f);
    const y = parseYoloLabels(t, f.path, img.path, classes);
    errors.push(...y.errors);
    records++;
    samples.push(y.sample);
  }

  // Attach samples to images.
  const planned = new Map<SourceFile, PlannedImage>();
  for (const im of images) planned.set(im, { file: im, samples: [] });
  for (const s of samples) {
    let img = resolver(s.image);
    if (!img && s.image.startsWith('data:')) {
      const f = fromDataUri(s.image, `${s.file || 'record'}-line${s.line}`);
      if (f) {
        img = f;
        planned.set(f, { file: f, samples: [] });
      }
    }
    if (!img) {
      const lines = s.line ? ` (line ${s.line})` : '';
      errors.push({ file: s.file, line: s.line, reason: `image "${s.image}" not found among the imported files${s.line ? '' : lines}` });
      continue;
    }
    if (!planned.has(img)) planned.set(img, { file: img, samples: [], existingId: standIns.get(img) });
    planned.get(img)!.samples.push(s);
  }
  for (const [f, o] of origs) {
    const p = planned.get(f);
    if (p) p.orig = o;
  }

  // Kind: patchwork's, else the most common among samples.
  let kind: TaskKind | null = dataset?.kind ?? null;
  if (!kind && samples.length) {
    const count = new Map<TaskKind, number>();
    for (const s of samples) count.set(s.kind, (count.get(s.kind) ?? 0) + 1);
    kind = [...count].sort((a, b) => b[1] - a[1])[0][0];
  }
  for (const s of samples) for (const b of s.boxes) if (b.label && !classes.includes(b.label)) classes.push(b.label);

  return { images: [...planned.values()].filter((p) => !p.existingId || p.samples.length), errors, warnings, skipped, kind, classes, dataset, records };
}

/**
 * Finds an image by the path a record names (already resolved against the dataset file's folder and
 * checked by paths.ts): exact, then by file name, the longest matching folder suffix winning (a
 * JSONL dropped beside its images, whatever folders they came in).
 */
export function imageResolver(images: SourceFile[]): (ref: string) => SourceFile | undefined {
  const norm = (p: string) => p.replace(/\\/g, '/').replace(/^(\.\/)+/, '').toLowerCase();
  const exact = new Map<string, SourceFile>();
  const byBase = new Map<string, { path: string; file: SourceFile }[]>();
  for (const f of images) {
    const n = norm(f.path);
    exact.set(n, f);
    const b = baseName(n);
    byBase.set(b, [...(byBase.get(b) ?? []), { path: n, file: f }]);
  }
  // Length of the common path suffix, counted in whole segments.
  const common = (a: string, b: string) => {
    const x = a.split('/').reverse();
    const y = b.split('/').reverse();
    let k = 0;
    while (k < x.length && k < y.length && x[k] === y[k]) k++;
    return k;
  };
  return (ref: string) => {
    if (!ref || isDataUri(ref)) return undefined;
    const n = norm(ref);
    const hit = exact.get(n);
    if (hit) return hit;
    const cands = byBase.get(baseName(n));
    if (!cands) return undefined;
    let best = cands[0];
    for (const c of cands) if (common(c.path, n) > common(best.path, n)) best = c;
    return best.file;
  };
}

/**
 * Labels read from files merged into an image's labels: boxes not already there are added (same
 * corners to 0.01 px, label and question = already there); a text answer fills empty fields, an equal
 * one is already there, a different one is returned in `extra` (it becomes its own copy of the image,
 * as a second question/answer of one image does).
 */
export function mergeLabels(into: Labels, incoming: Labels[]): { labels: Labels; extra: Labels[]; added: number } {
  const labels: Labels = { ...into, boxes: [...into.boxes] };
  for (const l of incoming) if (l.written) labels.written = { ...l.written, ...labels.written };
  const extra: Labels[] = [];
  let added = 0;
  const same = (a: Box, b: Box) => ['x1', 'y1', 'x2', 'y2'].every((k) => Math.abs(a[k as 'x1'] - b[k as 'x1']) <= 0.01) && a.label === b.label && a.question === b.question;
  for (const l of incoming) {
    for (const b of l.boxes) {
      if (labels.boxes.some((x) => same(x, b))) continue;
      labels.boxes.push(b);
      added++;
    }
    const text = (x: Labels) => [x.question, x.answer, x.chosen, x.rejected].join('\u0000');
    if (!(l.answer || l.chosen || l.rejected)) {
      if (!labels.question && l.question) labels.question = l.question;
      continue;
    }
    if (!(labels.answer || labels.chosen || labels.rejected)) {
      Object.assign(labels, { question: l.question || labels.question, answer: l.answer, chosen: l.chosen, rejected: l.rejected });
      added++;
    } else if (text(labels) !== text({ ...l, question: l.question || labels.question }) && !extra.some((e) => text(e) === text(l))) {
      extra.push({ ...l, boxes: [] });
    }
  }
  return { labels, extra, added };
}

function fromDataUri(uri: string, name: string): SourceFile | undefined {
  const m = /^data:([^;,]*)(;base64)?,(.*)$/s.exec(uri);
  if (!m) return undefined;
  const type = m[1] || 'image/png';
  let bytes: Uint8Array;
  if (m[2]) {
    const bin = atob(m[3]);
    bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  } else bytes = new TextEncoder().encode(decodeURIComponent(m[3]));
  const ext = type.split('/')[1]?.replace('jpeg', 'jpg') ?? 'png';
  return sourceFromBytes(`${name}.${ext}`, bytes, type);
}

function fromPatchwork(rec: PatchworkFile['images'][number], kind: TaskKind, file: string, line: number): ParsedSample {
  const l = rec.labels ?? emptyLabels();
  return {
    file,
    line,
    image: rec.path,
    kind,
    question: l.question ?? '',
    answer: l.answer ?? '',
    chosen: l.chosen ?? '',
    rejected: l.rejected ?? '',
    // stored pixels of the stored image == pixels of the exported file
    boxes: (l.boxes ?? []).map((b) => ({ x1: b.x1, y1: b.y1, x2: b.x2, y2: b.y2, frame: 'abs' as const, label: b.label ?? '', question: b.question ?? '' })),
    stated: [rec.width, rec.height],
  };
}

export interface DecodedSize {
  /** decoded file size (original pixels) */
  fileWidth: number;
  fileHeight: number;
  /** original / stored */
  scale: number;
}

/** Boxes smaller than this (stored pixels) on a side are refused, as in the labeler. */
export const MIN_BOX_SIDE = 2;

/**
 * The labels for one decoded image from its samples, boxes converted into the stored frame:
 * format frame → file (original) pixels → / scale → clamped to the stored image. Grounding boxes
 * of several samples merge into one image; each further text sample (VQA, preference) becomes its
 * own copy of the image (one question/answer per image record).
 */
export function labelsForImage(samples: ParsedSample[], size: DecodedSize, opts: ResizeOpts): { labels: Labels[]; warnings: string[] } {
  const warnings: string[] = [];
  const W = Math.round(size.fileWidth / size.scale);
  const H = Math.round(size.fileHeight / size.scale);
  const out: Labels[] = [];
  const clamped: string[] = [];
  for (const s of samples) {
    const boxes: Box[] = [];
    const written: Record<string, string> = {};
    const where = `${s.file ? s.file + ' ' : ''}line ${s.line}`;
    for (const b of s.boxes) {
      // Corners out of order are not swapped quietly: the box is refused, named.
      const order = boxShapeProblem([b.x1, b.y1, b.x2, b.y2]);
      if (order) {
        warnings.push(`${where}: ${order}; skipped`);
        continue;
      }
      let f = toFilePixels(b, b.frame, size.fileWidth, size.fileHeight, opts);
      if (b.frame === 'abs' && s.stated && (s.stated[0] !== size.fileWidth || s.stated[1] !== size.fileHeight) && s.stated[0] > 0 && s.stated[1] > 0) {
        const sx = size.fileWidth / s.stated[0];
        const sy = size.fileHeight / s.stated[1];
        f = { x1: f.x1 * sx, y1: f.y1 * sy, x2: f.x2 * sx, y2: f.y2 * sy };
      }
      const st = { x1: f.x1 / size.scale, y1: f.y1 / size.scale, x2: f.x2 / size.scale, y2: f.y2 / size.scale };
      const n = normalizeBox(st, W, H);
      const tol = 1;
      if (Math.min(st.x1, st.x2) < -tol || Math.min(st.y1, st.y2) < -tol || Math.max(st.x1, st.x2) > W + tol || Math.max(st.y1, st.y2) > H + tol) clamped.push(`${where} [${[b.x1, b.y1, b.x2, b.y2].join(', ')}]`);
      if (n.x2 - n.x1 < MIN_BOX_SIDE || n.y2 - n.y1 < MIN_BOX_SIDE) {
        warnings.push(`${where}: box [${[b.x1, b.y1, b.x2, b.y2].join(', ')}] is smaller than ${MIN_BOX_SIDE} px inside the image; skipped`);
        continue;
      }
      const box: Box = { id: uid('b'), x1: round2(n.x1), y1: round2(n.y1), x2: round2(n.x2), y2: round2(n.y2), label: b.label, question: b.question };
      boxes.push(box);
      // An answer written in the model's own frame is kept verbatim (records.ts uses it while the boxes match).
      if (b.answer !== undefined && b.frame === 'resized') written[boxQuestion(box)] = b.answer;
    }
    const hasText = !!(s.answer || s.chosen || s.rejected) && s.kind !== 'grounding';
    let target = out[0];
    if (hasText && target && (target.answer || target.chosen || target.rejected)) target = undefined as unknown as Labels;
    if (!target) {
      target = emptyLabels();
      out.push(target);
    }
    target.boxes.push(...boxes);
    if (Object.keys(written).length) target.written = { ...target.written, ...written };
    if (!target.question && s.question && s.kind !== 'grounding') target.question = s.question;
    if (hasText) {
      target.answer = s.answer;
      target.chosen = s.chosen;
      target.rejected = s.rejected;
      if (s.question) target.question = s.question;
    }
  }
  if (clamped.length) warnings.push(`${clamped.length} box${clamped.length > 1 ? 'es' : ''} reached outside the image and ${clamped.length > 1 ? 'were' : 'was'} clamped to it: ${clamped.join('; ')}`);
  if (out.length === 0) out.push(emptyLabels());
  return { labels: out, warnings };
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
