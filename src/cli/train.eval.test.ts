// The CLI's evaluation: --eval-split / --eval-data refused when they cannot work, eval lines printed
// every eval.evalSteps steps and at the end, and OUT/metrics.jsonl holding every logged step once,
// continued (not duplicated) by --resume.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendFile, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeGpu } from '../gpu/node.ts';
import { trainCli, UsageError, USAGE } from './train.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'patchwork-cli-eval-'));
  await writeFile(join(dir, 'eval.json'), JSON.stringify({ eval: { evalSteps: 1, evalMaxNewTokens: 6 } }));
});
afterAll(async () => {
  await closeGpu();
});

async function cli(...argv: string[]): Promise<{ code?: number; error?: Error; out: string[]; err: string[] }> {
  const out: string[] = [], err: string[] = [];
  try {
    return { code: await trainCli(argv, { log: (l) => out.push(l), error: (l) => err.push(l) }), out, err };
  } catch (e) {
    return { error: e as Error, out, err };
  }
}
const refusal = async (...argv: string[]) => {
  const r = await cli('--model', 'tiny', '--out', join(dir, 'out-none'), ...argv);
  expect(r.error).toBeInstanceOf(UsageError);
  return r.error!.message;
};

describe('eval flags', () => {
  it('refuses a split that is not a number, one that leaves nothing to train on, and two eval sets', async () => {
    expect(USAGE).toMatch(/--eval-split F/);
    expect(USAGE).toMatch(/--eval-data/);
    expect(await refusal('--data', 'synthetic:4', '--eval-split', 'half')).toMatch(/eval\.evalSplit: --eval-split half: expected a fraction/);
    expect(await refusal('--data', 'synthetic:4', '--eval-split', '1.5')).toMatch(/eval\.evalSplit: The eval split is 0 \(none\), a fraction/);
    expect(await refusal('--data', 'synthetic:4', '--eval-split', '4')).toMatch(/holds out 4 of the dataset's 4 images, leaving none to train on: hold out at most 3/);
    expect(await refusal('--data', 'synthetic:4', '--eval-split', '0.5', '--eval-data', 'synthetic:2')).toMatch(/both name the eval set: keep one/);
    expect(await refusal('--data', 'synthetic:4', '--eval-data', join(dir, 'missing.jsonl'))).toMatch(/--eval-data .*missing\.jsonl: cannot read it \(ENOENT\)/);
  });
});

describe('npm run train --eval-split', () => {
  it('prints eval lines with loss, parse rate, mean IoU and acc@0.5 and appends every step to metrics.jsonl; --resume continues it', async () => {
    const out = join(dir, 'run');
    const r = await cli('--model', 'tiny', '--data', 'synthetic:4', '--method', 'sft', '--eval-split', '0.25', '--steps', '2', '--config', join(dir, 'eval.json'), '--out', out);
    expect(r.error).toBeUndefined();
    expect(r.code).toBe(0);
    expect(r.out.join('\n')).toMatch(/sft on 3 examples, 2 steps.*evaluating 1 held-out examples \(1 of 4 images\) every 1 steps and at the end/);
    const evals = r.out.filter((l) => l.startsWith('eval at step'));
    expect(evals.length).toBe(2);
    for (const l of evals) expect(l).toMatch(/^eval at step \d:  loss \d+\.\d{4}  mean_token_accuracy \d\.\d{4}  parse rate \d\.\d{4}  mean IoU \d\.\d{4}  acc@0\.5 \d\.\d{4}  acc@0\.75 \d\.\d{4}$/);
    const records = async () => (await readFile(join(out, 'metrics.jsonl'), 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, number>);
    let recs = await records();
    expect(recs.map((x) => [x.step, 'eval_loss' in x ? 'eval' : 'train'])).toEqual([[1, 'train'], [1, 'eval'], [2, 'train'], [2, 'eval']]);
    const ev = recs[1];
    expect(Object.keys(ev).sort()).toEqual(['eval_grounding/acc_iou50', 'eval_grounding/acc_iou75', 'eval_grounding/mean_iou', 'eval_grounding/parse_rate', 'eval_loss', 'eval_mean_token_accuracy', 'step']);
    expect(ev.eval_loss).toBeGreaterThan(0);
    expect(Number(/loss (\S+)/.exec(evals[0])![1])).toBeCloseTo(ev.eval_loss, 4);
    expect(recs[0]).toMatchObject({ step: 1, loss: expect.any(Number), learning_rate: expect.any(Number), grad_norm: expect.any(Number) });

    // a record the file already holds (as after a kill between a logged step and its checkpoint) and a
    // line cut short: --resume ends the partial line and does not write step 3's train record twice
    await appendFile(join(out, 'metrics.jsonl'), JSON.stringify({ step: 3, loss: 1 }) + '\n{"step": 3, "eval_lo');
    const again = await cli('--model', 'tiny', '--data', 'synthetic:4', '--method', 'sft', '--eval-split', '0.25', '--steps', '3', '--config', join(dir, 'eval.json'), '--out', out, '--resume');
    expect(again.error).toBeUndefined();
    expect(again.out).toContain('resumed at step 2');
    expect(again.out.filter((l) => l.startsWith('eval at step'))).toEqual([expect.stringMatching(/^eval at step 3: /)]);
    const text = await readFile(join(out, 'metrics.jsonl'), 'utf8');
    const lines = text.split('\n').filter(Boolean);
    expect(lines[lines.length - 2]).toBe('{"step": 3, "eval_lo');
    recs = lines.filter((l) => !l.startsWith('{"step": 3, "eval_lo')).map((l) => JSON.parse(l));
    expect(recs.map((x) => [x.step, 'eval_loss' in x ? 'eval' : 'train'])).toEqual([[1, 'train'], [1, 'eval'], [2, 'train'], [2, 'eval'], [3, 'train'], [3, 'eval']]);
    expect(recs[4]).toEqual({ step: 3, loss: 1 });
  }, 600_000);
});
