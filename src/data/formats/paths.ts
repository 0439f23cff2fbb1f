// Image paths written in dataset files → paths inside the dataset folder. Pure string logic, so the
// CLI (files on disk), the studio (dropped folders) and zips apply the same rule: a path is
// relative to the folder of the dataset file that names it (ms-swift, LLaMA-Factory and the
// cluster bundle's JSONL all work so), and it may not leave that folder. Refused, each with the
// reason: `..` above the folder, absolute POSIX paths, Windows drive (C:\, C:x) and UNC (\\host\share)
// forms, URLs (file:, http:, …), percent-encoded forms of any of these (%2e%2e%2f), NUL bytes.
// data: URIs are inline images, not paths; callers handle them with isDataUri first.

export function isDataUri(ref: string): boolean {
  return /^data:/i.test(ref.trim());
}

/** The folder part of a POSIX or Windows path ('' for a bare name). */
export function dirName(path: string): string {
  const p = path.replace(/\\/g, '/');
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
}

/** Why a written path may not be used (null when it is a plain relative path). */
export function pathEscape(ref: string): string | null {
  if (ref.trim() === '') return 'the image path is empty';
  if (ref.includes('\0')) return 'the path holds a NUL byte';
  const check = (p: string, how: string): string | null => {
    const s = p.replace(/\\/g, '/');
    if (/^\/\//.test(s)) return `it is a network (UNC) path${how}`;
    if (/^[a-z]:/i.test(s)) return `it is an absolute Windows path (drive ${s[0].toUpperCase()}:)${how}`;
    if (/^[a-z][a-z0-9+.-]+:/i.test(s)) return `it is a URL (${s.slice(0, s.indexOf(':') + 1)})${how}; only files inside the dataset folder are read`;
    if (s.startsWith('/')) return `it is an absolute path${how}`;
    let depth = 0;
    for (const seg of s.split('/')) {
      if (seg === '..') depth--;
      else if (seg !== '.' && seg !== '') depth++;
      if (depth < 0) return `".." leads above the dataset folder${how}`;
    }
    return null;
  };
  const plain = check(ref.trim(), '');
  if (plain) return plain;
  // The same checks on the percent-decoded form: a reader that decodes (a URL, a zip tool) must not escape either.
  let decoded = ref;
  for (let k = 0; k < 3 && /%[0-9a-f]{2}/i.test(decoded); k++) {
    try {
      decoded = decodeURIComponent(decoded);
    } catch {
      break;
    }
  }
  if (decoded !== ref) {
    if (decoded.includes('\0')) return 'the path holds a percent-encoded NUL byte';
    return check(decoded.trim(), ' once percent-decoded');
  }
  return null;
}

/** Joins and normalises POSIX segments ('a/./b/../c' → 'a/c'); the caller checked nothing climbs out. */
export function normalizePath(path: string): string {
  const out: string[] = [];
  for (const seg of path.replace(/\\/g, '/').split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') out.pop();
    else out.push(seg);
  }
  return out.join('/');
}

export type ResolvedPath = { path: string; error?: undefined } | { error: string; path?: undefined };

/**
 * An image path as written in `datasetFile` (itself a path relative to the import root, or on disk)
 * → the image's path, joined with the dataset file's folder and normalised. A path that leaves
 * that folder gives `error`: '"../x.png" leaves the dataset folder: ".." leads above …'.
 */
export function resolveImagePath(ref: string, datasetFile: string): ResolvedPath {
  const why = pathEscape(ref);
  if (why) return { error: `image path ${JSON.stringify(ref)} is refused: ${why}; write it relative to the folder of ${baseOf(datasetFile) || 'the dataset file'} and keep the image inside that folder` };
  // The folder part is the caller's (maybe absolute, on disk); only the written part is normalised.
  const dir = dirName(datasetFile).replace(/\/+$/, '');
  const rel = normalizePath(ref.trim());
  return { path: dir ? `${dir}/${rel}` : rel };
}

function baseOf(p: string): string {
  const s = p.replace(/\\/g, '/');
  return s.slice(s.lastIndexOf('/') + 1);
}
