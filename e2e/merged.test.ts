// The merged-model export in the built app, through the download route (the button this browser
// always has; the folder route needs a user gesture on a native picker): the playground's trained
// fixture adapter (e2e/fixtures/playground/) imported on the Export screen, merged into the
// built-in tiny model with a 20 MB shard limit so it shards, every file caught by playwright's
// download events into one folder. Then in Node: the folder holds exactly what transformers'
// save_pretrained + the processor write, and OUR loader (a local folder source, no adapter) scores
// the fixture's example like the base tiny model with the adapter on, within BF16 rounding
// (export/mergedParity.ts, the rule export/merged.test.ts holds the Node export to). First, Cancel:
// clicked as soon as it shows, the export stops saying "cancelled" and config.json never arrives.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Download, Page } from 'playwright-core';
import { launch, ROOT, serveDist, watchErrors, type Browser, type StaticServer } from './harness.ts';
import { importAdapterFiles } from './trainUtil.ts';
import { closeGpu, nodeGpu } from '../src/gpu/node.ts';
import { dirSource } from '../src/model/sources/node.ts';
import { tinySource } from '../src/model/tiny.ts';
import { loadModel, loadTokenizer } from '../src/model/weights.ts';
import { adapterFromPeftFiles } from '../src/export/merged.ts';
import { describeParity, mergedParity } from '../src/export/mergedParity.ts';
import { decodeImageFile, DEFAULT_IMAGE_CONFIG, preprocessImage, stackImages } from '../src/data/image.ts';
import { buildSample, IGNORE_INDEX } from '../src/data/template.ts';
import { DEFAULT_CONFIG } from '../src/config/config.ts';

const FIX = join(ROOT, 'e2e', 'fixtures', 'playground');

let server: StaticServer;
let browser: Browser;
let work: string;
beforeAll(async () => {
  server = await serveDist();
  browser = await launch();
  work = await mkdtemp(join(tmpdir(), 'patchwork-merged-e2e-'));
});
afterAll(async () => {
  await browser?.close();
  await server?.close();
  if (work) await rm(work, { recursive: true, force: true });
  await closeGpu();
});

/** Every download of the page saved under `dir` by its suggested name, until the returned function says stop. */
function catchDownloads(page: Page, dir: string) {
  const saved: Promise<string>[] = [];
  const on = (d: Download) => saved.push(d.saveAs(join(dir, d.suggestedFilename())).then(() => d.suggestedFilename()));
  page.on('download', on);
  return async () => {
    page.off('download', on);
    return Promise.all(saved);
  };
}

const note = (page: Page) => page.getByTestId('export-merged-note');

describe('merged export', () => {
  it('downloads a sharded Hugging Face folder that our loader scores like base + adapter; Cancel stops it without config.json', { timeout: 300_000 }, async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    const t0 = Date.now();
    const lap = (what: string) => console.log(`[e2e merged] ${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // ---- the trained adapter onto the tiny model (Export → Import)
    await importAdapterFiles(page, server.url, FIX, /^imported: .*14 modules, r = 8/);
    lap('adapter imported');

    const card = page.getByTestId('export-merged');
    // the card names what it writes, and the NF4 rule
    const help = (await card.locator('.help').textContent())!;
    for (const f of ['model.safetensors.index.json', 'config.json', 'tokenizer.json', 'chat_template.json', 'preprocessor_config.json', 'generation_config.json']) expect(help).toContain(f);
    expect(help).toMatch(/4-bit \(NF4\)\s+base is merged into the full-precision base/);
    await page.getByTestId('export-merged-from').selectOption('imported');
    await page.getByTestId('export-merged-shard').fill('20MB');
    const button = page.getByTestId('export-merged-download');
    await expect.poll(() => button.isEnabled()).toBe(true);

    // ---- Cancel, clicked the moment it shows (in the page, so no round trip lets the export run ahead):
    // the worker takes the cancel at its first wait, at the latest the first file's hand-over
    const cutDir = join(work, 'cancelled');
    const stopCut = catchDownloads(page, cutDir);
    await page.evaluate(() => {
      new MutationObserver((_, obs) => {
        const b = document.querySelector<HTMLButtonElement>('[data-testid="export-merged-cancel"]');
        if (b) {
          obs.disconnect();
          b.click();
        }
      }).observe(document.body, { subtree: true, childList: true });
    });
    await button.click();
    await expect.poll(() => note(page).getAttribute('data-level').catch(() => null), { timeout: 120_000 }).toBe('cancelled');
    expect(await note(page).textContent()).toMatch(/^Merged export cancelled after [01] files?\b.*config\.json was not downloaded/);
    expect(await note(page).getAttribute('role')).toBeNull(); // an outcome asked for, not an alert
    const cut = await stopCut();
    expect(cut.length).toBeLessThanOrEqual(1);
    expect(cut).not.toContain('config.json');
    expect(await page.getByTestId('export-merged-cancel').count()).toBe(0);
    lap(`cancelled after ${cut.length} file(s)`);

    // ---- the whole export, every file downloaded into one folder
    const dir = join(work, 'merged');
    const stop = catchDownloads(page, dir);
    const progress: string[] = [];
    await page.exposeFunction('pwMergedProgress', (t: string) => void progress.push(t));
    await page.evaluate(() => {
      const w = window as unknown as { pwMergedProgress(t: string): void };
      new MutationObserver(() => {
        const t = document.querySelector('[data-testid="export-merged-progress-text"]')?.textContent;
        if (t) w.pwMergedProgress(t);
      }).observe(document.body, { subtree: true, childList: true, characterData: true });
    });
    await expect.poll(() => button.isEnabled()).toBe(true);
    await button.click();
    await expect.poll(() => note(page).getAttribute('data-level').catch(() => null), { timeout: 180_000 }).toBe('ok');
    const names = await stop();
    lap(`exported ${names.length} files`);
    const text = (await note(page).textContent())!;
    expect(text).toMatch(/^Downloaded 10 files \(put them in one folder\): model-00001-of-00003\.safetensors, .*, config\.json\. .* M parameters, .* BF16 in 3 shards, 14 layers merged into tiny model/);

    // the folder: the shards and their index, the base's small files, config.json (last, as the note lists them)
    const want = [
      'model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors',
      'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.json', 'preprocessor_config.json', 'model.safetensors.index.json', 'config.json',
    ];
    // written in this order (the note lists them so); the browser may start a big download after a small one
    expect(/\): (.*?)\. /.exec(text)?.[1].split(', ')).toEqual(want);
    expect([...names].sort()).toEqual([...want].sort());
    expect((await readdir(dir)).sort()).toEqual([...want].sort());
    const index = JSON.parse(await readFile(join(dir, 'model.safetensors.index.json'), 'utf8')) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    expect(new Set(Object.values(index.weight_map))).toEqual(new Set(want.slice(0, 3)));
    let shardBytes = 0;
    for (const f of want.slice(0, 3)) shardBytes += (await stat(join(dir, f))).size;
    expect(shardBytes).toBeGreaterThan(index.metadata.total_size); // the tensors plus three headers
    expect(JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')).torch_dtype).toBe('bfloat16');
    expect(JSON.parse(await readFile(join(dir, 'chat_template.json'), 'utf8')).chat_template).toMatch(/<\|im_start\|>/);

    // the progress line named the files as they were written and counted bytes up to the total
    expect(progress.length).toBeGreaterThan(0);
    const seen = progress.map((p) => /^\s*(?:file (\d+) of 10: (\S+)(?: \((\S+)\))?|all 10 files written) — (.+) of (80\.2 MiB) \((\d+) %\)$/.exec(p));
    expect(seen.every((m) => m), JSON.stringify(progress)).toBe(true);
    for (const m of seen) if (m![2]) expect(want[Number(m![1]) - 1]).toBe(m![2]);
    const pct = seen.map((m) => Number(m![6]));
    expect(pct.every((p, i) => p <= 100 && (i === 0 || p >= pct[i - 1]))).toBe(true);
    expect(seen.some((m) => m![2]?.startsWith('model-0000') && m![3])).toBe(true); // a shard, with the tensor just merged
    expect(new Set(seen.map((m) => m![2]).filter(Boolean))).toEqual(new Set(want)); // each file named while written

    expect(errors).toEqual([]);
    await page.close(); // its worker's SwiftShader threads would compete with the Node check

    // ---- in Node: our loader reads the downloaded folder, no adapter, and scores the fixture's example
    await nodeGpu();
    const merged = await dirSource(dir);
    const base = tinySource();
    const cfg = (await loadModel(merged, { keep: false })).config;
    const adapter = adapterFromPeftFiles({
      'adapter_config.json': new Uint8Array(await readFile(join(FIX, 'adapter_config.json'))),
      'adapter_model.safetensors': new Uint8Array(await readFile(join(FIX, 'adapter_model.safetensors'))),
    }, cfg);
    const tokenizer = await loadTokenizer(merged, cfg); // the downloaded tokenizer.json
    const record = JSON.parse((await readFile(join(FIX, 'data.jsonl'), 'utf8')).trim()) as { messages: { role: 'user' | 'assistant'; content: { type: 'image' | 'text'; text?: string }[] }[] };
    const image = stackImages([preprocessImage(decodeImageFile(new Uint8Array(await readFile(join(FIX, 'square.png'))), 'square.png'), DEFAULT_IMAGE_CONFIG)]);
    const messages = record.messages.map((m) => (m.role === 'assistant' ? { role: m.role, content: m.content.map((c) => c.text).join('') } : { role: m.role, content: m.content.map((c) => (c.type === 'image' ? { type: 'image' as const } : { type: 'text' as const, text: c.text! })) }));
    const s = buildSample({ messages, images: [{ gridThw: Array.from(image.imageGridThw) }], tokenizer, maxLength: DEFAULT_CONFIG.data.maxLength });
    const seq = { inputIds: s.inputIds, images: image, scoreStart: s.labels.findIndex((l) => l !== IGNORE_INDEX) };
    expect(seq.scoreStart).toBeGreaterThan(0);
    lap(`the example: ${seq.inputIds.length} tokens`);
    const p = await mergedParity(base, merged, adapter, seq);
    console.log(`[e2e merged] ${describeParity(p)}`);
    expect(p.f32Gap).toBeLessThan(1e-4);
    expect(p.gap).toBeLessThan(p.tol);
    expect(p.effect).toBeGreaterThan(20 * p.tol);
    expect(p.rounding).toBeGreaterThan(0);
    lap('reloaded and compared');
  });
});
