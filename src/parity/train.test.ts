// The golden cases of the GPU model (lora_sft, dpo, grpo) must all PASS.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { caseFiles, runCase } from './index.ts';
import { disposeGoldenModels } from './model.ts';
import { trainCases } from './train.ts';

const root = resolve(__dirname, '../../../shared/golden');
const kinds = Object.keys(trainCases);
const files = existsSync(root) ? caseFiles(root).filter((f) => kinds.some((k) => f.split('/').pop()!.startsWith(`${k}__`))) : [];

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => {
  disposeGoldenModels();
  await closeGpu();
});

describe.skipIf(!files.length)('golden: lora_sft, dpo, grpo (logps, losses, LoRA gradients)', () => {
  it('covers every kind', () => {
    for (const k of kinds) expect(files.some((f) => f.includes(`/${k}__`)), k).toBe(true);
  });
  for (const f of files) {
    it(f.split('/').pop()!, async () => {
      const r = await runCase(f, root);
      const detail = r.checks.map((c) => `${c.name} ${c.err.toExponential(2)}/${c.tol.toExponential(2)}`).join(', ');
      const worst = r.checks.reduce((w, c) => (c.err / (c.tol || 1e-30) > w.err / (w.tol || 1e-30) ? c : w), r.checks[0]);
      if (worst) console.log(`${r.status} ${f.split('/').pop()}: ${r.checks.length} checks, worst ${worst.name} ${worst.err.toExponential(2)} (tol ${worst.tol.toExponential(2)})`);
      expect(r.status, `${r.error ?? ''} ${detail}`).toBe('PASS');
    });
  }
});
