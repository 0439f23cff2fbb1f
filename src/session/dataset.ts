// Dataset files → ExampleSources for a front end that reads files (the CLI), through THE parser
// (data/formats: parseDatasetFile, toSample, labelsForImage, taskRecords), so a file trains on
// exactly what the studio would import from it: JSONL or a JSON array of ms-swift (messages /
// query-response / objects with <ref-object> and <bbox>), LLaMA-Factory sharegpt, trl (content as a
// string or a list of parts; preference and prompt-only records) records, the cluster bundle's
// train.jsonl, COCO detection JSON, patchwork.json. Image paths are relative to the file's folder
// (the parser resolves them and refuses those that leave it). Problems (bad JSON, unknown shapes, a
// conversation that starts with the assistant, missing or undecodable images, bad boxes) are
// returned per line, all at once, with the rest.
import type { LineError } from '../data/formats/jsonl.ts';
import { parseDatasetFile } from '../data/formats/dataset.ts';
import { DEFAULT_PARSE_OPTS, toSample, type DatasetRecord, type ParsedSample, type ParseOpts } from '../data/formats/parse.ts';
import { recordProblems } from '../data/validate.ts';
import { isDataUri } from '../data/formats/paths.ts';
import { labelsForImage } from '../data/formats/import.ts';
import { taskRecords, type TaskRecord } from '../data/formats/records.ts';
import type { RewardKind, TaskKind } from '../data/formats/types.ts';
import type { RawImage } from '../data/image.ts';
import { syntheticGrounding, syntheticPreferences, syntheticRlPrompts } from '../data/synthetic.ts';
import type { Method, TrainConfig } from '../config/config.ts';
import type { ExampleProblem, ExampleSource, SourceImage } from './examples.ts';

/** How the front end reaches the images a JSONL names. */
export interface FileHost {
  /** the bytes of `ref`, relative to the JSONL's folder; throws (with the reason) when missing or outside the folder */
  read(ref: string): Promise<Uint8Array>;
  /** pixels of image bytes; throws with the reason */
  decode(bytes: Uint8Array, name: string): RawImage | Promise<RawImage>;
}

export interface DatasetFile {
  sources: ExampleSource[];
  problems: ExampleProblem[];
  warnings: string[];
}

const lineWhere = (file: string, line: number) => `${file} line ${line}`;

/** The reward an RL record is scored with: IoU against its boxes, else exact match against its answer, else format. */
function rewardOf(s: ParsedSample): RewardKind {
  return s.boxes.length ? 'iou' : s.answer ? 'exact' : 'format';
}

/**
 * The training records of one parsed line on its decoded image (the studio's import path). Its
 * boxes are checked by data/validate.ts recordProblems, in the frame each is written in.
 */
function recordsOf(s: ParsedSample, rec: DatasetRecord, image: RawImage, data: { minPixels: number; maxPixels: number }): { records: TaskRecord[]; problems: string[]; warnings: string[] } {
  // only the first image of a record is used (parseRecord warned about the others)
  const problems = recordProblems({ ...rec, images: rec.images.slice(0, 1) }, [{ width: image.width, height: image.height }], data).map((e) => `${e.reason}: ${/\bbox\b/.test(e.reason) ? 'fix or remove the box' : 'replace or resize the image'}`);
  if (problems.length) return { records: [], problems, warnings: [] };
  const { labels, warnings } = labelsForImage([s], { fileWidth: image.width, fileHeight: image.height, scale: 1 }, data);
  const kind: TaskKind = s.kind;
  const ds = { kind, minPixels: data.minPixels, maxPixels: data.maxPixels, reward: rewardOf(s) };
  const records = labels.flatMap((l) => taskRecords(ds, { width: image.width, height: image.height, labels: l }));
  if (!records.length) problems.push(`the record gives nothing to train on (a ${kind} record without ${kind === 'vqa' ? 'an answer' : kind === 'preference' ? 'chosen and rejected answers' : 'boxes or a reference'})`);
  return { records, problems, warnings };
}

/**
 * A dataset file's text → ExampleSources, one per record (a line of several questions gives
 * several), each named `file line N`. `data` is the smart_resize frame of the answers (config.data).
 */
export async function datasetSources(text: string, file: string, host: FileHost, data: TrainConfig['data'], opts: ParseOpts = DEFAULT_PARSE_OPTS): Promise<DatasetFile> {
  const problems: ExampleProblem[] = [], warnings: string[] = [], sources: ExampleSource[] = [];
  const lineProblem = (e: LineError) => problems.push({ where: lineWhere(file, e.line), message: e.reason });
  const parsed = parseDatasetFile(text, file, opts);
  parsed.problems.forEach(lineProblem);
  warnings.push(...parsed.warnings.map((w) => `${w}; only the first is used`));
  const images = new Map<string, Promise<SourceImage>>();
  const imageOf = (ref: string) => {
    let p = images.get(ref);
    if (!p) {
      p = (async (): Promise<SourceImage> => {
        if (isDataUri(ref)) return { name: 'a data: URI', error: 'data: URI images are read by the studio only; save the image next to the dataset file and name its path' };
        try {
          return { name: ref, image: await host.decode(await host.read(ref), ref) };
        } catch (e) {
          return { name: ref, error: (e as Error).message };
        }
      })();
      images.set(ref, p);
    }
    return p;
  };
  for (const rec of parsed.records) {
    const where = lineWhere(file, rec.line);
    if (!rec.images.length) {
      problems.push({ where, message: 'no image: expected "images": ["path"] (or "image")' });
      continue;
    }
    const sample = toSample(rec);
    const im = await imageOf(sample.image);
    if (!im.image) {
      problems.push({ where, message: `cannot read the image ${im.name} (${im.error}): fix the path (relative to ${file}'s folder) or the file` });
      continue;
    }
    const got = recordsOf(sample, rec, im.image, data);
    for (const m of got.problems) problems.push({ where, message: m });
    warnings.push(...got.warnings.map((w) => `${where}: ${w}`));
    for (const rec of got.records) sources.push({ where, record: rec, images: [im] });
  }
  return { sources, problems, warnings };
}

/** `synthetic:N` data (data/synthetic.ts) for `method`, as records like any other dataset's. */
export function syntheticSources(method: Method, count: number, seed = 1): ExampleSource[] {
  const text = (c: unknown) => (typeof c === 'string' ? c : (c as { type: string; text?: string }[]).filter((p) => p.type === 'text').map((p) => p.text).join(''));
  if (method === 'sft') {
    return syntheticGrounding({ count, seed }).map((r, i) => ({
      where: `synthetic sample ${i + 1}`,
      record: { kind: 'sft', question: text(r.messages[0].content), answer: text(r.messages[1].content) },
      images: [{ name: `synthetic-${i + 1}.png`, image: r.image }],
    }));
  }
  if (method === 'dpo') {
    return syntheticPreferences({ count, seed }).map((r, i) => ({
      where: `synthetic pair ${i + 1}`,
      record: { kind: 'preference', prompt: text(r.prompt[0].content), chosen: r.chosen, rejected: r.rejected },
      images: [{ name: `synthetic-${i + 1}.png`, image: r.image }],
    }));
  }
  return syntheticRlPrompts({ count, seed }).map((r, i) => ({
    where: `synthetic prompt ${i + 1}`,
    record: { kind: 'rl', prompt: text(r.prompt[0].content), reward: 'iou', reference: r.reference.answer, boxes: r.reference.boxes.map(([x1, y1, x2, y2]) => ({ x1, y1, x2, y2, label: '' })) },
    images: [{ name: `synthetic-${i + 1}.png`, image: r.image }],
  }));
}
