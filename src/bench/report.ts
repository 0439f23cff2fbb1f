// The machine-readable bench report, `npm run bench -- --json FILE`:
//   { adapter, features, rows: [{ group, name, shape, ours_ms, peers: { <peer>: ms } }], ... }
// Every bench body adds its rows here (addRow) as it prints its table; the CLI writes the file at
// the end (atomically: a half-written report is never left behind). Row schema, for every group:
//   group    one of BENCH_GROUPS
//   name     what was timed, short and stable across runs ("3B q/o proj f32 W", "causal GQA fwd")
//   shape    the sizes, as text ("400×2048×2048", "q [400,16,128] kv [400,2,128]")
//   ours_ms  our time per call in ms (best of the rounds), null when ours failed
//   peers    other implementations on the same device in the same run, ms per call (null = failed)
//   extra    optional numbers that belong to the row (GFLOP/s, tokens/s, a breakdown), flat
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export const BENCH_GROUPS = ['matmul', 'attention_fwd', 'attention_bwd', 'lm_head', 'step', 'decode'] as const;
export type BenchGroup = (typeof BENCH_GROUPS)[number];

export interface BenchRow {
  group: BenchGroup;
  name: string;
  shape: string;
  ours_ms: number | null;
  peers: Record<string, number | null>;
  extra?: Record<string, number | string | null>;
}

export interface BenchReport {
  adapter: string;
  features: string[];
  /** when the run started (ISO), the argv it ran with, and any notes the bodies left */
  started: string;
  args: string[];
  notes: string[];
  /** feature variants (src/gpu/selftest.ts) that passed the self-test and ran */
  variants?: string[];
  rows: BenchRow[];
}

/**
 * What every bench body gets (src/cli/bench.ts builds it). A plug-in module under src/bench/
 * (attention.ts, lmHead.ts, …) exports `benchRows(ctx: BenchContext): Promise<void>`, prints its
 * table through ctx.log and adds one row per timed thing through ctx.add.
 */
export interface BenchContext {
  quick: boolean;
  /** peer names asked for on the command line (tfjs, ort, jax) */
  peers: string[];
  rounds: number;
  log: (line: string) => void;
  add: (row: BenchRow) => void;
  note: (text: string) => void;
}

const num = (v: number | null | undefined): number | null => (typeof v === 'number' && Number.isFinite(v) ? Math.round(v * 1000) / 1000 : null);

export class Report {
  readonly data: BenchReport;
  constructor(adapter: string, features: string[], args: string[] = []) {
    this.data = { adapter, features: [...features].sort(), started: new Date().toISOString(), args, notes: [], rows: [] };
  }

  /** Add a row; refuses an unknown group or a row without a name (a typo would silently vanish from comparisons). */
  add(row: BenchRow): void {
    if (!(BENCH_GROUPS as readonly string[]).includes(row.group)) throw new Error(`bench row "${row.name}": group "${row.group}" is not one of ${BENCH_GROUPS.join(', ')}`);
    if (!row.name) throw new Error(`bench row in group ${row.group} has no name`);
    const peers: Record<string, number | null> = {};
    for (const [k, v] of Object.entries(row.peers ?? {})) peers[k] = num(v);
    const out: BenchRow = { group: row.group, name: row.name, shape: row.shape, ours_ms: num(row.ours_ms), peers };
    if (row.extra) out.extra = Object.fromEntries(Object.entries(row.extra).map(([k, v]) => [k, typeof v === 'number' ? num(v) : v]));
    this.data.rows.push(out);
  }

  note(text: string): void {
    this.data.notes.push(text);
  }

  context(o: { quick: boolean; peers: string[]; rounds: number; log: (line: string) => void }): BenchContext {
    return { ...o, add: (r) => this.add(r), note: (t) => this.note(t) };
  }

  toJSON(): BenchReport {
    return this.data;
  }

  /** Write to `file` through a temporary sibling and a rename. */
  write(file: string): void {
    const path = resolve(file);
    mkdirSync(dirname(path), { recursive: true });
    const tmp = `${path}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(this.data, null, 1) + '\n');
    renameSync(tmp, path);
  }
}
