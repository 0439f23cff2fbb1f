// The golden cases of the elementwise kinds (rmsnorm, swiglu, gelu_exact, mrope_apply,
// vision_rope_apply) under ../shared/golden must all PASS; prints each case's max error.
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { elementwiseCases } from './elementwise.ts';
import { GoldenCase } from './golden.ts';

const root = resolve(process.cwd(), '../shared/golden');
const kinds = Object.keys(elementwiseCases);
const dir = join(root, 'cases');
const files = existsSync(dir) ? readdirSync(dir).filter((f) => kinds.some((k) => f.startsWith(`${k}__`))).sort() : [];

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

describe.skipIf(!files.length)('golden: rmsnorm, swiglu, gelu_exact, mrope_apply, vision_rope_apply', () => {
  it('covers every kind', () => {
    for (const k of kinds) expect(files.some((f) => f.startsWith(`${k}__`)), k).toBe(true);
  });
  for (const f of files) {
    it(f, async () => {
      const c = new GoldenCase(join(dir, f), root);
      const checks = await elementwiseCases[c.kind](c);
      console.log(`${f}: ${checks.map((k) => `${k.name} ${k.err.toExponential(2)} (tol ${k.tol.toExponential(2)})`).join(', ')}`);
      expect(checks.length).toBeGreaterThan(0);
      for (const k of checks) expect(k.err, `${f} ${k.name}`).toBeLessThanOrEqual(k.tol);
    });
  }
});
