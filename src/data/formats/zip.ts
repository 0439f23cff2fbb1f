// Zip of images + annotation files (fflate), both ways. Images are stored without compression
// (already compressed; saves time), text deflated.

import { strToU8, unzipSync, zipSync, type Zippable } from 'fflate';
import type { ExportFile } from './export.ts';
import { mimeOf, type SourceFile } from './types.ts';

/** Members of a zip as SourceFiles (folders and macOS metadata dropped). */
export function unzipFiles(data: Uint8Array): SourceFile[] {
  const entries = unzipSync(data, { filter: (f) => !f.name.endsWith('/') && !/(^|\/)(__MACOSX\/|\.DS_Store$)/.test(f.name) });
  return Object.entries(entries).map(([path, bytes]) => ({ path, size: bytes.length, type: mimeOf(path), bytes: async () => bytes }));
}

/** Builds a zip from text files and image bytes keyed by their path inside the zip. */
export function zipDataset(files: ExportFile[], images: Map<string, Uint8Array>): Uint8Array {
  const z: Zippable = {};
  for (const f of files) z[f.path] = [strToU8(f.text), { level: 6 }];
  for (const [path, bytes] of images) z[path] = [bytes, { level: 0 }];
  return zipSync(z);
}
