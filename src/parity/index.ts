// Runs every case file under <dir>/cases whose kind has a handler; the rest SKIP.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { GoldenCase, type CaseHandler, type Check } from './golden.ts';
import { linearCases } from './linear.ts';
import { elementwiseCases } from './elementwise.ts';
import { attentionCases } from './attention.ts';
import { dataCases } from './data.ts';
import { modelCases } from './model.ts';
import { trainCases } from './train.ts';

export const handlers: Record<string, CaseHandler> = {
  ...linearCases, ...elementwiseCases, ...attentionCases, ...dataCases, ...modelCases, ...trainCases,
};

export interface CaseResult { file: string; kind: string; status: 'PASS' | 'FAIL' | 'SKIP'; checks: Check[]; error?: string }

export function caseFiles(dir: string): string[] {
  const casesDir = join(dir, 'cases');
  return readdirSync(casesDir).filter((f) => f.endsWith('.safetensors')).sort().map((f) => join(casesDir, f));
}

export async function runCase(path: string, root: string): Promise<CaseResult> {
  let c: GoldenCase;
  try {
    c = new GoldenCase(path, root);
  } catch (e) {
    return { file: path, kind: '?', status: 'FAIL', checks: [], error: (e as Error).message };
  }
  const h = handlers[c.kind];
  if (!h) return { file: c.file, kind: c.kind, status: 'SKIP', checks: [] };
  try {
    const checks = await h(c);
    const ok = checks.length > 0 && checks.every((k) => k.pass);
    return { file: c.file, kind: c.kind, status: ok ? 'PASS' : 'FAIL', checks, error: checks.length ? undefined : 'handler made no checks' };
  } catch (e) {
    return { file: c.file, kind: c.kind, status: 'FAIL', checks: [], error: (e as Error).stack ?? String(e) };
  }
}
