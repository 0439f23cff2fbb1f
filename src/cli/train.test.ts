// The headless CLI: end to end (a JSONL dataset with PNG images on disk → training steps on the
// built-in tiny model → a PEFT adapter whose keys, shapes and base model are right), the studio's
// cluster-bundle export read back and trained on, and the bad inputs it refuses before any GPU work,
// each with the message that names what and why.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, writeFile, lstat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { PNG } from 'pngjs';
import { syntheticGrounding } from '../data/synthetic.ts';
import type { RawImage } from '../data/image.ts';
import { readSafetensors } from '../model/safetensors.ts';
import { taskRecords } from '../data/formats/records.ts';
import { newDataset, type ImageRecord } from '../data/formats/types.ts';
import { exportDataset } from '../data/formats/export.ts';
import { clusterBundle } from '../export/cluster.ts';
import { DEFAULT_CONFIG } from '../config/config.ts';
import { closeGpu } from '../gpu/node.ts';
import { parseFlags, trainCli, UsageError, USAGE } from './train.ts';
import { baseModelId } from '../session/model.ts';
import { resolveImagePath } from '../data/formats/paths.ts';

const run = promisify(execFile);
const root = resolve(__dirname, '../..');

const png = (img: RawImage) => {
  const p = new PNG({ width: img.width, height: img.height });
  const c = img.channels ?? 3;
  for (let i = 0; i < img.width * img.height; i++) p.data.set([img.data[c * i], img.data[c * i + 1], img.data[c * i + 2], 255], 4 * i);
  return PNG.sync.write(p);
};

let dir: string;
const synth = syntheticGrounding({ count: 2, seed: 3 });
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'patchwork-cli-'));
  for (const [i, r] of synth.entries()) await writeFile(join(dir, `img${i}.png`), png(r.image));
  await writeFile(join(dir, 'tiny.png'), png({ data: new Uint8Array(5 * 5 * 3), width: 5, height: 5, channels: 3 }));
  await writeFile(join(dir, 'good.jsonl'), synth.map((r, i) => JSON.stringify({ messages: [{ role: 'user', content: `<image>${r.question}` }, { role: 'assistant', content: r.answer }], images: [`img${i}.png`] })).join('\n'));
});
afterAll(async () => {
  await closeGpu();
});

/** trainCli in this process; the error (a UsageError for what the user passed) or the exit code and output */
async function cli(...argv: string[]): Promise<{ code?: number; error?: Error; out: string[]; err: string[] }> {
  const out: string[] = [], err: string[] = [];
  try {
    const code = await trainCli(argv, { log: (l) => out.push(l), error: (l) => err.push(l) });
    return { code, out, err };
  } catch (e) {
    return { error: e as Error, out, err };
  }
}
const write = async (name: string, text: string) => (await writeFile(join(dir, name), text), join(dir, name));
const usage = async (...argv: string[]) => {
  const r = await cli(...argv);
  expect(r.error, `expected a refusal of ${argv.join(' ')}`).toBeInstanceOf(UsageError);
  return r.error!.message;
};
const base = () => ['--model', 'tiny', '--data', join(dir, 'good.jsonl'), '--out', join(dir, 'out-none')];

describe('bad flags', () => {
  it('an unknown flag names the nearest one and lists the valid flags', async () => {
    const m = await usage(...base(), '--stpes', '5');
    expect(m).toMatch(/unknown flag --stpes: did you mean --steps\?/);
    expect(m).toMatch(/valid flags: --model --data --method --config --out/);
  });
  it('--steps abc (and 0, and 1.5) are errors, not "full epochs"', async () => {
    expect(await usage(...base(), '--steps', 'abc')).toMatch(/optim\.maxSteps: --steps abc: expected a whole number of optimizer steps ≥ 1/);
    expect(await usage(...base(), '--steps', '0')).toMatch(/--steps 0: expected a whole number/);
    expect(await usage(...base(), '--steps', '1.5')).toMatch(/--steps 1\.5: expected a whole number/);
  });
  it('a flag without its value, a stray word, a repeated flag, a switch with a value', () => {
    expect(() => parseFlags(['--model'])).toThrow(/--model needs a value/);
    expect(() => parseFlags(['--model', '--data', 'x'])).toThrow(/--model needs a value/);
    expect(() => parseFlags(['tiny'])).toThrow(/unexpected argument "tiny"/);
    expect(() => parseFlags(['--steps', '1', '--steps', '2'])).toThrow(/--steps given twice/);
    expect(() => parseFlags(['--resume=yes'])).toThrow(/--resume is a switch/);
    expect(parseFlags(['--steps=3', '--skip-invalid'])).toEqual({ steps: '3', 'skip-invalid': true });
  });
  it('--quantize takes only nf4 (or none), through the config model.quantize; the usage text lists it', async () => {
    expect(await usage(...base(), '--quantize', 'fp4')).toMatch(/model\.quantize: --quantize fp4: only "nf4" \(a 4-bit NF4 base, QLoRA\) or "none" is supported/);
    const both = await usage(...base(), '--quantize', 'int8', '--steps', 'x'); // all problems at once
    expect(both).toMatch(/2 problems/);
    expect(both).toMatch(/model\.quantize: --quantize int8/);
    expect(() => parseFlags(['--no-quantize-vision=1'])).toThrow(/--no-quantize-vision is a switch/);
    expect(USAGE).toMatch(/--quantize nf4/);
    expect(USAGE).toMatch(/--no-quantize-vision/);
  });
  it('a pre-quantised bitsandbytes hub repo names its full-precision base in the adapter', () => {
    expect(baseModelId({ source: 'hub', repo: 'unsloth/Qwen2.5-VL-3B-Instruct-unsloth-bnb-4bit' })).toBe('unsloth/Qwen2.5-VL-3B-Instruct');
    expect(baseModelId({ source: 'hub', repo: 'unsloth/Qwen2.5-VL-7B-Instruct-bnb-4bit' })).toBe('unsloth/Qwen2.5-VL-7B-Instruct');
    expect(baseModelId({ source: 'hub', repo: 'Qwen/Qwen2.5-VL-3B-Instruct' })).toBe('Qwen/Qwen2.5-VL-3B-Instruct');
  });
  it('an unknown method, a missing --data, a model that is neither a folder nor a hub id', async () => {
    expect(await usage(...base(), '--method', 'orpo')).toMatch(/--method orpo: expected one of sft, dpo, grpo, ppo/);
    expect(await usage('--model', 'tiny')).toMatch(/--data is required/);
    expect(await usage('--model', join(dir, 'nope'), '--data', 'x')).toMatch(/no such folder, and not a hub id/);
  });
  it('a model folder without tokenizer.json and weights is named before anything loads', async () => {
    await mkdir(join(dir, 'model'), { recursive: true });
    await writeFile(join(dir, 'model', 'config.json'), '{}');
    expect(await usage('--model', join(dir, 'model'), '--data', join(dir, 'good.jsonl'))).toMatch(/model\.local: The folder ".*model" lacks tokenizer\.json, \*\.safetensors weights/);
  });
});

describe('bad config', () => {
  it('a typo fails with the nearest key', async () => {
    const m = await usage(...base(), '--config', await write('typo.json', JSON.stringify({ learing_rate: 1e-4 })));
    expect(m).toMatch(/^--config .*typo\.json has 1 problem:/);
    expect(m).toMatch(/learing_rate: unknown setting "learing_rate": did you mean "optim\.learningRate" \(trl: learning_rate\)\?/);
  });
  it('the old peft spelling inside a section points at the config name', async () => {
    expect(await usage(...base(), '--config', await write('peft.json', JSON.stringify({ lora: { r: 4, loraAlpha: 8 } })))).toMatch(/lora\.loraAlpha: unknown setting "lora\.loraAlpha": did you mean "lora\.alpha" \(trl: lora_alpha\)\?/);
  });
  it('out-of-range values, all at once', async () => {
    const m = await usage(...base(), '--config', await write('range.json', JSON.stringify({ optim: { learningRate: 1e10, batchSize: 1e6 }, lora: { dropout: 1 } })));
    expect(m).toMatch(/has 3 problems/);
    expect(m).toMatch(/optim\.learningRate: The learning rate must be a number in \(0, 1\)/);
    expect(m).toMatch(/optim\.batchSize: Batch size is a whole number from 1 to 1024/);
    expect(m).toMatch(/lora\.dropout: Dropout is a probability in \[0, 1\)/);
  });
  it('not JSON, or no such file', async () => {
    expect(await usage(...base(), '--config', await write('bad.json', '{"optim": '))).toMatch(/bad\.json is not JSON/);
    expect(await usage(...base(), '--config', join(dir, 'missing.json'))).toMatch(/missing\.json: cannot read it \(ENOENT\)/);
  });
  it('rules against the dataset size: a batch larger than the data', async () => {
    expect(await usage(...base(), '--config', await write('batch.json', JSON.stringify({ per_device_train_batch_size: 8 })))).toMatch(/with 2 examples has 1 problem:\n {2}optim\.batchSize: Batch size 8 is more than the dataset's 2 examples/);
  });
});

describe('bad data', () => {
  it('--resume with nothing to resume says so and exits non-zero', async () => {
    const r = await cli(...base(), '--resume');
    expect(r.error).toBeInstanceOf(UsageError);
    expect(r.error!.message).toMatch(/--resume: nothing to resume: .*out-none.*checkpoints holds no checkpoint of run "cli"/);
  });
  it('a missing data file', async () => {
    expect(await usage('--model', 'tiny', '--data', join(dir, 'none.jsonl'))).toMatch(/--data .*none\.jsonl: cannot read it \(ENOENT\)/);
  });
  it('every bad record is named with its line before the model loads; the default refuses', async () => {
    const data = await write('bad.jsonl', [
      JSON.stringify({ query: '<image>ok?', response: 'yes', images: ['img0.png'] }),
      '{"messages": [broken',
      JSON.stringify({ query: '<image>q', response: 'a', images: ['../outside.png'] }),
      JSON.stringify({ query: '<image>q', response: 'a', images: [join(dir, 'img0.png')] }),
      JSON.stringify({ query: '<image>q', response: 'a', images: ['tiny.png'] }),
      JSON.stringify({ messages: [{ role: 'assistant', content: 'first' }, { role: 'user', content: '<image>q' }], images: ['img0.png'] }),
      JSON.stringify({ messages: [{ role: 'user', content: '<image>Find <ref-object>' }, { role: 'assistant', content: '<bbox>' }], images: ['img0.png'], objects: { ref: ['x'], bbox: [[50, 10, 20, 40]] } }),
    ].join('\n'));
    const m = await usage('--model', 'tiny', '--data', data, '--out', join(dir, 'out-bad'));
    expect(m).toMatch(/6 records of .*bad\.jsonl cannot be trained on; fix them, or pass --skip-invalid/);
    expect(m).toMatch(/line 2: invalid JSON/);
    expect(m).toMatch(/line 3: image path "\.\.\/outside\.png" is refused: "\.\." leads above the dataset folder/);
    expect(m).toMatch(/line 4: image path ".*img0\.png" is refused: it is an absolute path/);
    expect(m).toMatch(/line 6: messages\[0\]: the conversation starts with the assistant/);
    expect(m).toMatch(/line 7: objects\.bbox\[0\]: box \[50, 10, 20, 40\]: x1 50 must be less than x2 20/);
    // found on the decoded image (data/validate.ts recordProblems), reported in the same list
    expect(m).toMatch(/line 5: image .*tiny\.png \(5×5\): image 5x5 \(HxW\) is too small: both sides must be at least 10 pixels: replace or resize the image/);
  });
  it('image paths stay in the JSONL\'s folder (data/formats/paths.ts, the resolver the CLI reads through)', () => {
    expect(resolveImagePath('a/b.png', '/d/train.jsonl')).toEqual({ path: '/d/a/b.png' });
    expect(resolveImagePath('a/../../x.png', '/d/train.jsonl').error).toMatch(/"\.\." leads above the dataset folder/);
    expect(resolveImagePath('https://x/y.png', '/d/train.jsonl').error).toMatch(/URL/);
  });
});

describe('npm run train', () => {
  it('trains on a JSONL + PNG dataset (bad line skipped with --skip-invalid) and writes a PEFT adapter', async () => {
    const lines = (await readFile(join(dir, 'good.jsonl'), 'utf8')).split('\n');
    lines.splice(1, 0, '{"messages": [broken');
    await writeFile(join(dir, 'train.jsonl'), lines.join('\n'));
    await writeFile(join(dir, 'config.json'), JSON.stringify({ lora: { r: 4, alpha: 8 }, optim: { learningRate: 1e-3, saveSteps: 1 } }));
    const out = join(dir, 'run-out');
    const { stdout, stderr } = await run('npx', ['tsx', '--import', './scripts/raw-loader.mjs', 'src/cli/train.ts', '--model', 'tiny', '--data', join(dir, 'train.jsonl'),
      '--method', 'sft', '--steps', '2', '--config', join(dir, 'config.json'), '--out', out, '--skip-invalid'], { cwd: root, timeout: 240_000 });
    expect(stderr).toMatch(/skipped .*train\.jsonl line 2: invalid JSON/);
    expect(stdout).toMatch(/step 1\/2 .* loss \d+\.\d+/);
    expect(stdout).toMatch(/checkpoint at step 1/); // periodic checkpoints (optim.saveSteps)
    const st = readSafetensors(await readFile(join(out, 'adapter', 'adapter_model.safetensors')));
    const a = st.tensors.get('base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight');
    const b = st.tensors.get('base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_B.weight');
    expect(a?.shape[0]).toBe(4);
    expect(b?.shape[1]).toBe(4);
    const cfg = JSON.parse(await readFile(join(out, 'adapter', 'adapter_config.json'), 'utf8'));
    expect((await lstat(join(out, 'adapter'))).isSymbolicLink()).toBe(true); // swapped in one rename (cli/files.ts writeFilesAtomic)
    expect(cfg).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 8, lora_dropout: DEFAULT_CONFIG.lora.dropout, base_model_name_or_path: 'patchwork-builtin-tiny' });
    expect((await readdir(join(out, 'checkpoints'))).map(decodeURIComponent)).toContain('run/cli/latest');
    // and a second run continues from it
    const again = await run('npx', ['tsx', '--import', './scripts/raw-loader.mjs', 'src/cli/train.ts', '--model', 'tiny', '--data', join(dir, 'good.jsonl'),
      '--steps', '3', '--config', join(dir, 'config.json'), '--out', out, '--resume'], { cwd: root, timeout: 240_000 });
    expect(again.stdout).toMatch(/resumed at step 2/);
    expect(again.stdout).toMatch(/step 3\/3/);
  }, 480_000);

  it('--quantize nf4 trains the tiny model on a 4-bit NF4 base and writes an ordinary peft adapter', async () => {
    const out = join(dir, 'adapter-nf4');
    const r = await cli('--model', 'tiny', '--data', join(dir, 'good.jsonl'), '--steps', '2', '--quantize', 'nf4', '--out', out, '--config', await write('nf4.json', JSON.stringify({ lora: { r: 2, alpha: 4 }, optim: { learningRate: 1e-3 } })));
    expect(r.error).toBeUndefined();
    expect(r.code).toBe(0);
    const log = r.out.join('\n');
    const m = /base: NF4 \((\d+) weights 4-bit, vision tower included\); adapter base_model_name_or_path patchwork-builtin-tiny/.exec(log);
    expect(m, log).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(0);
    expect(log).toMatch(/step 2\/2 .* loss \d+\.\d+/);
    const cfg = JSON.parse(await readFile(join(out, 'adapter', 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({ peft_type: 'LORA', r: 2, lora_alpha: 4, base_model_name_or_path: 'patchwork-builtin-tiny' });
    const st = readSafetensors(await readFile(join(out, 'adapter', 'adapter_model.safetensors')));
    expect(st.tensors.get('base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight')?.shape).toEqual([2, expect.any(Number)]);
    // the default run of the same CLI is a BF16 base
    const bf = await cli('--model', 'tiny', '--data', join(dir, 'good.jsonl'), '--steps', '1', '--out', join(dir, 'adapter-bf16'), '--config', join(dir, 'nf4.json'));
    expect(bf.out).toContain('base: BF16');
  }, 240_000);

  it('reads the studio\'s cluster bundle (trl, content as a list of parts; image paths relative to its train.jsonl) and trains on it', async () => {
    // the bundle exactly as the studio builds it (worker/engine.ts clusterBundle): trl export of a stored dataset
    const ds = { ...newDataset('shapes'), id: 'ds' };
    const images: ImageRecord[] = synth.map((s, i) => ({
      id: `img${i}`, datasetId: ds.id, name: `s${i}.png`, type: 'image/png', width: s.image.width, height: s.image.height,
      origWidth: s.image.width, origHeight: s.image.height, scale: 1, bytes: 1, order: i, addedAt: 0,
      labels: { boxes: [{ id: `b${i}`, x1: s.box[0], y1: s.box[1], x2: s.box[2], y2: s.box[3], label: s.label, question: s.question }], question: '', answer: '', chosen: '', rejected: '' },
    }));
    const ex = exportDataset(ds, images, 'trl');
    const records = (ex.files.find((f) => f.path === 'data.jsonl')?.text ?? '').split('\n').filter(Boolean).map((l) => JSON.parse(l) as object);
    expect(JSON.stringify(records[0])).toMatch(/"content":\[\{"type":"image"\}/); // content parts
    const files = clusterBundle({ ...DEFAULT_CONFIG, model: { ...DEFAULT_CONFIG.model, source: 'hub' } }, { records, images: images.map((im, i) => ({ name: ex.imagePaths.get(im.id)!, bytes: png(synth[i].image) })) });
    const bdir = join(dir, 'bundle');
    for (const f of files) {
      await mkdir(dirname(join(bdir, f.name)), { recursive: true });
      await writeFile(join(bdir, f.name), f.bytes);
    }
    const r = await cli('--model', 'tiny', '--data', join(bdir, 'train.jsonl'), '--steps', '1', '--out', join(dir, 'bundle-out'), '--config', await write('small.json', JSON.stringify({ lora: { r: 2, alpha: 4 } })));
    expect(r.error).toBeUndefined();
    expect(r.code).toBe(0);
    expect(r.err.filter((l) => !l.startsWith('warning:'))).toEqual([]);
    expect(r.out.join('\n')).toMatch(/sft on 2 examples, 1 steps/);
    // what the studio would train: the same records taskRecords makes of the stored images
    expect(taskRecords(ds, images[0])).toHaveLength(1);
  });
});
