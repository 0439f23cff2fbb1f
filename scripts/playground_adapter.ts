// Makes e2e/fixtures/playground/: a 120×90 PNG (a red square on blue), its one grounding question as
// trl JSONL, and a LoRA adapter of the built-in tiny model trained on that example by the CLI until
// its greedy answer reproduces the box (the CLI's eval on the same example: parse rate 1, IoU 1).
// The Playground e2e imports the adapter and asks the question: a random tiny model never answers
// with a box, this genuinely trained one does. Rerun after a change to the tiny model, the chat
// template or training (npx tsx scripts/playground_adapter.ts); it takes a few minutes.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { png } from '../e2e/datasetUtil.ts';

const ROOT = resolve(import.meta.dirname, '..');
const OUT = join(ROOT, 'e2e', 'fixtures', 'playground');
// 120×90 resizes (smart_resize, the default bounds) to 112×84: the answer's box is in that frame,
// and the page maps it back to 120×90 pixels
export const SQUARE = { x1: 30, y1: 22, x2: 75, y2: 60 };
const question = 'Where is the red square?';
const answer = '{"bbox_2d": [28, 21, 70, 56], "label": "square"}';

mkdirSync(OUT, { recursive: true });
writeFileSync(join(OUT, 'square.png'), png(120, 90, (x, y) => (x >= SQUARE.x1 && x < SQUARE.x2 && y >= SQUARE.y1 && y < SQUARE.y2 ? [220, 30, 30] : [40, 70, 160])));
const record = { messages: [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: question }] }, { role: 'assistant', content: [{ type: 'text', text: answer }] }], images: ['square.png'] };
writeFileSync(join(OUT, 'data.jsonl'), JSON.stringify(record) + '\n');

const work = mkdtempSync(join(tmpdir(), 'pw-playground-'));
// a high constant learning rate on one example: memorised in a few dozen steps; no dropout, small r
const config = {
  lora: { r: 8, alpha: 16, dropout: 0 },
  optim: { learningRate: 0.02, lrScheduler: 'constant', warmupSteps: 0, maxSteps: 70, saveSteps: 0 },
  eval: { evalSteps: 35, evalMaxNewTokens: 40 },
};
writeFileSync(join(work, 'config.json'), JSON.stringify(config));
const r = spawnSync('npm', ['run', 'train', '--', '--model', 'tiny', '--data', join(OUT, 'data.jsonl'), '--eval-data', join(OUT, 'data.jsonl'), '--method', 'sft', '--config', join(work, 'config.json'), '--out', join(work, 'run')], { cwd: ROOT, stdio: 'inherit' });
if (r.status !== 0) throw new Error(`training failed (exit ${r.status})`);
const metrics = readFileSync(join(work, 'run', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
const last = metrics.filter((m) => 'eval_grounding/mean_iou' in m).at(-1);
console.log('last eval:', last);
if (!last || last['eval_grounding/parse_rate'] !== 1 || !(last['eval_grounding/mean_iou'] > 0.99)) throw new Error('the adapter does not reproduce the box yet: train longer');
for (const f of ['adapter_config.json', 'adapter_model.safetensors']) copyFileSync(join(work, 'run', 'adapter', f), join(OUT, f));
rmSync(work, { recursive: true, force: true });
console.log(`wrote ${OUT}`);
