// The golden cases of kinds lora_linear and conv3d_patch_embed, through the parity handlers.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../gpu/node.ts';
import { caseFiles, runCase } from './index.ts';
import { linearCases } from './linear.ts';

const root = resolve(__dirname, '../../../shared/golden');
const files = existsSync(root) ? caseFiles(root).filter((f) => Object.keys(linearCases).some((k) => f.split('/').pop()!.startsWith(k + '__'))) : [];

afterAll(async () => { await closeGpu(); });

describe('golden: lora_linear, conv3d_patch_embed', () => {
  it('finds the cases', () => {
    expect(existsSync(root), `golden dir ${root}`).toBe(true);
    expect(files.length).toBeGreaterThanOrEqual(2);
  });
  it.each(files.map((f) => [f.split('/').pop()!, f]))('%s PASSes', async (_name, path) => {
    const r = await runCase(path, root);
    const detail = r.error ?? r.checks.map((c) => `${c.name}: err ${c.err.toExponential(2)} tol ${c.tol.toExponential(2)}`).join('; ');
    expect(r.status, detail).toBe('PASS');
    expect(r.checks.length).toBeGreaterThan(0);
  });
});
