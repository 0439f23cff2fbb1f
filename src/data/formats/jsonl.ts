// JSON Lines reading/writing with per-line error reports: one bad line never loses the others.

export interface LineError {
  /** file the problem is in ('' when there is one input) */
  file: string;
  /** 1-based line number (JSONL) or item index + 1 (JSON array); 0 when not tied to a line */
  line: number;
  reason: string;
}

export interface JsonRecord {
  line: number;
  value: unknown;
}

/** Parses JSONL text. Blank lines and a UTF-8 BOM are skipped; each bad line gives one error. */
export function parseJsonl(text: string, file = ''): { records: JsonRecord[]; errors: LineError[] } {
  const records: JsonRecord[] = [];
  const errors: LineError[] = [];
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const s = lines[i].trim();
    if (s === '') continue;
    try {
      const value = JSON.parse(s);
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        errors.push({ file, line: i + 1, reason: `expected a JSON object, got ${Array.isArray(value) ? 'an array' : JSON.stringify(value)?.slice(0, 40)}` });
      } else {
        records.push({ line: i + 1, value });
      }
    } catch (e) {
      errors.push({ file, line: i + 1, reason: `invalid JSON: ${(e as Error).message}` });
    }
  }
  return { records, errors };
}

/**
 * A .json file holding an array of records (LLaMA-Factory's usual layout) → records numbered
 * by item (1-based). An object with a `data`/`records` array is accepted too.
 */
export function parseJsonArray(text: string, file = ''): { records: JsonRecord[]; errors: LineError[] } {
  let value: unknown;
  try {
    value = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (e) {
    // Maybe it is JSONL saved as .json.
    const asLines = parseJsonl(text, file);
    if (asLines.records.length > 0) return asLines;
    return { records: [], errors: [{ file, line: 0, reason: `invalid JSON: ${(e as Error).message}` }] };
  }
  const arr = Array.isArray(value) ? value : isObj(value) && Array.isArray(value.data) ? value.data : isObj(value) && Array.isArray(value.records) ? value.records : [value];
  const records: JsonRecord[] = [];
  const errors: LineError[] = [];
  arr.forEach((v: unknown, i: number) => {
    if (isObj(v)) records.push({ line: i + 1, value: v });
    else errors.push({ file, line: i + 1, reason: 'expected a JSON object' });
  });
  return { records, errors };
}

export function toJsonl(values: unknown[]): string {
  return values.map((v) => JSON.stringify(v)).join('\n') + (values.length ? '\n' : '');
}

export function isObj(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

export function formatError(e: LineError): string {
  const where = e.file ? (e.line ? `${e.file} line ${e.line}` : e.file) : e.line ? `line ${e.line}` : '';
  return where ? `${where}: ${e.reason}` : e.reason;
}
