// Runs the data-pipeline golden cases (smart_resize, patchify, vision_window_index, rope_index) found
// under ../shared/golden (relative to the repo root; GOLDEN_DIR overrides). Handlers are called
// directly so that other areas' handlers (and the GPU) are not loaded.
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dataCases } from './data.ts';
import { GoldenCase } from './golden.ts';

const root = resolve(process.env.GOLDEN_DIR ?? '../shared/golden');
const caseFiles = (dir: string) => readdirSync(join(dir, 'cases')).filter((f) => f.endsWith('.safetensors')).sort().map((f) => join(dir, 'cases', f));
const files = existsSync(join(root, 'cases')) ? caseFiles(root).filter((f) => new GoldenCase(f, root).kind in dataCases) : [];

describe.skipIf(files.length === 0)(`data golden cases in ${root}`, () => {
  it('covers every data kind', () => {
    const kinds = new Set(files.map((f) => new GoldenCase(f, root).kind));
    expect([...kinds].sort()).toEqual(['patchify', 'rope_index', 'smart_resize', 'vision_window_index']);
  });
  it.each(files.map((f) => [f.split('/').pop()!, f]))('%s', async (_name, file) => {
    const c = new GoldenCase(file, root);
    const checks = await dataCases[c.kind](c);
    expect(checks.length).toBeGreaterThan(0);
    expect(checks.filter((k) => !k.pass).map((k) => `${k.name}: err ${k.err} > tol ${k.tol}`)).toEqual([]);
  });
});
