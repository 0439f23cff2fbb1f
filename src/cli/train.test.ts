// The headless CLI end to end: a JSONL dataset with PNG images on disk → one training step on the
// built-in tiny model → a PEFT adapter whose keys and shapes are right; malformed lines are reported.
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { PNG } from 'pngjs';
import { syntheticGrounding } from '../data/synthetic.ts';
import { readSafetensors } from '../model/safetensors.ts';

const run = promisify(execFile);
const root = resolve(__dirname, '../..');

describe('npm run train', () => {
  it('trains on a JSONL + PNG dataset and writes a PEFT adapter', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'patchwork-cli-'));
    const lines: string[] = [];
    for (const [i, r] of syntheticGrounding({ count: 2, seed: 3 }).entries()) {
      const png = new PNG({ width: r.image.width, height: r.image.height });
      for (let p = 0; p < r.image.width * r.image.height; p++) {
        png.data.set([r.image.data[3 * p], r.image.data[3 * p + 1], r.image.data[3 * p + 2], 255], 4 * p);
      }
      await writeFile(join(dir, `img${i}.png`), PNG.sync.write(png));
      lines.push(JSON.stringify({ messages: [{ role: 'user', content: `<image>${r.question}` }, { role: 'assistant', content: r.answer }], images: [`img${i}.png`] }));
    }
    lines.splice(1, 0, '{"messages": [broken');
    await writeFile(join(dir, 'train.jsonl'), lines.join('\n'));
    await writeFile(join(dir, 'config.json'), JSON.stringify({ lora: { r: 4, loraAlpha: 8 }, optim: { learningRate: 1e-3 } }));
    const out = join(dir, 'adapter');
    const { stdout, stderr } = await run('npx', ['tsx', '--import', './scripts/raw-loader.mjs', 'src/cli/train.ts', '--model', 'tiny', '--data', join(dir, 'train.jsonl'),
      '--method', 'sft', '--steps', '1', '--config', join(dir, 'config.json'), '--out', out], { cwd: root, timeout: 240_000 });
    expect(stderr).toMatch(/line 2: invalid JSON/);
    expect(stdout).toMatch(/step 1\/1 .* loss \d+\.\d+/);
    const st = readSafetensors(await readFile(join(out, 'adapter_model.safetensors')));
    const a = st.tensors.get('base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight');
    const b = st.tensors.get('base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_B.weight');
    expect(a?.shape[0]).toBe(4);
    expect(b?.shape[1]).toBe(4);
    const cfg = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 8 });
  });
});
