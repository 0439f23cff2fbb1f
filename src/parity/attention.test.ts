// The golden cases of the attention / softmax-gather kinds under ../shared/golden must all PASS.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { attentionCases } from './attention.ts';
import { caseFiles, runCase } from './index.ts';

const root = resolve(process.cwd(), '../shared/golden');
const kinds = Object.keys(attentionCases);
const files = existsSync(root) ? caseFiles(root).filter((f) => kinds.some((k) => f.split('/').pop()!.startsWith(`${k}__`))) : [];

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

describe.skipIf(!files.length)('golden: attention, log-softmax gather, cross-entropy', () => {
  it('covers every kind', () => {
    for (const k of kinds) expect(files.some((f) => f.includes(`/${k}__`)), k).toBe(true);
  });
  for (const f of files) {
    it(f.split('/').pop()!, async () => {
      const r = await runCase(f, root);
      const detail = r.checks.map((c) => `${c.name} ${c.err.toExponential(2)}/${c.tol.toExponential(2)}`).join(', ');
      expect(r.status, `${r.error ?? ''} ${detail}`).toBe('PASS');
    });
  }
});
