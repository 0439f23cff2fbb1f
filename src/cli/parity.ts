// npm run parity -- <dir>: every cases/*.safetensors under <dir>, one line each, then a summary.
import { resolve } from 'node:path';
import { caseFiles, runCase } from '../parity/index.ts';
import { closeGpu, nodeGpu } from '../gpu/node.ts';

const args = process.argv.slice(2);
const dir = resolve(args.find((a) => !a.startsWith('-')) ?? '../shared/golden');
const verbose = args.includes('-v') || args.includes('--verbose');
const g = await nodeGpu();
console.log(`adapter: ${g.adapterName}`);
let passed = 0, failed = 0, skipped = 0;
for (const path of caseFiles(dir)) {
  const r = await runCase(path, dir);
  const worst = r.checks.reduce((w, c) => (!w || c.err / (c.tol || 1e-30) > w.err / (w.tol || 1e-30) ? c : w), undefined as (typeof r.checks)[number] | undefined);
  const detail = r.status === 'SKIP' ? `(no handler for "${r.kind}")` : worst ? `max err ${worst.err.toExponential(2)} vs tol ${worst.tol.toExponential(2)} (${worst.name})` : '';
  console.log(`${r.status} ${r.file.split('/').pop()} ${detail}`);
  if (r.error) console.log('  ' + r.error.split('\n').slice(0, verbose ? 20 : 3).join('\n  '));
  if (r.status === 'FAIL' || verbose) for (const c of r.checks) if (!c.pass || verbose) console.log(`  ${c.pass ? 'ok  ' : 'FAIL'} ${c.name}: err ${c.err.toExponential(2)} tol ${c.tol.toExponential(2)}`);
  if (r.status === 'PASS') passed++; else if (r.status === 'FAIL') failed++; else skipped++;
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
await closeGpu();
process.exit(failed ? 1 : 0);
