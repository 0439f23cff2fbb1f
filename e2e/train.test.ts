// The whole loop in the built app on WebGPU (SwiftShader): drop 3 PNGs, draw a box and ask a question,
// Train on the built-in tiny model (the loss chart gains points, the current loss updates), a second
// tab is refused the same run (Web Locks), Stop; Predictions with the adapter and the base model;
// Export → the downloaded adapter_model.safetensors has peft's keys and shapes; a reload keeps the
// dataset, the box and the run history with its charts. Screenshots of the Train screen mid-run and
// of the Predictions screen go to docs/screenshots/.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { launch, ROOT, serveDist, watchErrors, type Browser, type StaticServer } from './harness.ts';
import { labelledDataset } from './trainUtil.ts';
import { readSafetensors } from '../src/model/safetensors.ts';

let server: StaticServer;
let browser: Browser;

beforeAll(async () => {
  server = await serveDist();
  browser = await launch();
});
afterAll(async () => {
  await browser?.close();
  await server?.close();
});

const SHOTS = join(ROOT, 'docs', 'screenshots');
const num = async (page: Page, testId: string) => Number((await page.getByTestId(testId).textContent()) ?? NaN);

/** The run history as persisted in IndexedDB (what a reload will show), series from the per-step rows. */
function storedRuns(page: Page) {
  return page.evaluate(async () => {
    // never open a database the app has not created: that would create it empty, without its store
    const names = new Set((await indexedDB.databases()).map((d) => d.name));
    const all = <T,>(db: string, store: string, key?: string) =>
      new Promise<T>((ok, bad) => {
        if (!names.has(db)) return ok((key ? undefined : []) as T);
        const r = indexedDB.open(db);
        r.onerror = () => bad(r.error);
        r.onsuccess = () => {
          if (!r.result.objectStoreNames.contains(store)) {
            r.result.close();
            return ok((key ? undefined : []) as T);
          }
          const s = r.result.transaction(store).objectStore(store);
          const g = key ? s.get(key) : s.getAll();
          g.onsuccess = () => {
            ok(g.result as T);
            r.result.close();
          };
        };
      });
    const runs = ((await all<{ state?: { runs?: { id: string; status: string; checkpointStep?: number }[] } }>('patchwork-runs', 'kv', 'runs'))?.state?.runs ?? []);
    const rows = await all<{ runId: string; step: number; values: Record<string, number> }[]>('patchwork-metrics', 'steps').catch(() => []);
    return runs.map((r) => {
      const metrics: Record<string, { step: number[] }> = {};
      for (const row of rows) if (row.runId === r.id) for (const k of Object.keys(row.values)) (metrics[k] ??= { step: [] }).step.push(row.step);
      return { ...r, metrics };
    });
  });
}

describe('train, predict, export', () => {
  it('drop → label → Train (tiny) → Stop → Predictions → Export; a reload keeps it all', { timeout: 300_000 }, async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    const t0 = Date.now();
    const lap = (what: string) => console.log(`[e2e train] ${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // ---- dataset: 3 PNGs, a box and a question on the second
    await page.goto(server.url + '#dataset');
    await labelledDataset(page);
    lap('dataset labelled');

    // ---- train on the tiny model: Quick try preset, no warmup (so step 2 already moves the loss)
    await page.getByTestId('tab-train').click();
    await page.getByRole('button', { name: 'Quick try' }).click();
    // wait for the preset's warmup (5) before typing 0: the default is 0 too, so a fill that lands
    // before the preset renders changes nothing and the preset's 5 wins (lr 0 at step 1)
    const warmup = page.locator('input[name="optim.warmupSteps"]');
    await expect.poll(() => warmup.inputValue()).toBe('5');
    await warmup.fill('0');
    await warmup.blur();
    await expect.poll(() => warmup.inputValue()).toBe('0');
    expect(await page.getByRole('radio', { name: 'Built-in tiny' }).getAttribute('aria-checked')).toBe('true');
    const train = page.getByTestId('train-button');
    await expect.poll(() => train.isEnabled(), { timeout: 30_000 }).toBe(true);
    // the estimate is there before the start
    await expect.poll(() => page.getByTestId('estimate-memory').textContent(), { timeout: 30_000 }).toMatch(/fits — about .* per step/);
    // the model card's base precision: BF16 chosen, both bases' step memory side by side (nf4wire)
    await expect.poll(() => page.getByTestId('base-precision').textContent()).toMatch(/BF16 ~.*4-bit NF4 ~/);
    expect(await page.getByTestId('estimate-precision').textContent()).toMatch(/^BF16 — BF16 base .+, NF4 base .+/);
    await train.click();
    await page.getByTestId('run-state').waitFor({ timeout: 10_000 });
    await expect.poll(() => num(page, 'current-step'), { timeout: 120_000, interval: 250 }).toBeGreaterThanOrEqual(1);
    const loss1 = await page.getByTestId('current-loss').textContent();
    lap('step 1');
    await expect.poll(() => num(page, 'current-step'), { timeout: 60_000, interval: 250 }).toBeGreaterThanOrEqual(2);
    lap('step 2');
    const loss2 = await page.getByTestId('current-loss').textContent();
    expect(Number(loss1)).toBeGreaterThan(0);
    expect(Number(loss2)).toBeGreaterThan(0);
    expect(loss2).not.toBe(loss1); // the current loss updates
    // the loss chart has the run with ≥ 2 points
    const lossChart = page.locator('figure[data-metric="Loss"]');
    expect(await lossChart.locator('canvas').count()).toBe(1);
    expect(Number((await lossChart.locator('.chart-step').textContent())?.replace(/\D+/g, ''))).toBeGreaterThanOrEqual(2);
    expect(await page.locator('figure[data-metric="mean_token_accuracy"] canvas').count()).toBe(1); // the method's metric
    expect(await page.getByTestId('train-warnings').count()).toBe(0); // quick try: no dropout, so nothing ignored
    await mkdir(SHOTS, { recursive: true });
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(SHOTS, 'train-running.png') }); // the viewport: settings, controls, estimate and charts

    // ---- a second tab cannot train the same run (Web Locks)
    const runId = (await page.getByTestId('run-row').first().getAttribute('data-run'))!;
    await expect.poll(async () => (await storedRuns(page)).some((r) => r.id === runId)).toBe(true);
    const tab2 = await browser.context.newPage();
    const errors2 = watchErrors(tab2);
    await tab2.goto(server.url + '#train');
    const resume2 = tab2.locator(`[data-run="${runId}"] [data-testid="run-resume"]`);
    await resume2.waitFor({ timeout: 30_000 }); // the other tab sees the run cut off (stopped) and offers Resume
    await resume2.click();
    await expect.poll(() => tab2.getByTestId('train-message').textContent(), { timeout: 15_000 }).toMatch(/is being trained in another tab/);
    expect(errors2).toEqual([]);
    await tab2.close();
    lap('second tab refused');

    // ---- stop: a checkpoint is saved, the history says stopped
    await page.getByTestId('stop-button').click();
    await expect.poll(() => page.locator(`[data-run="${runId}"] [data-testid="run-status"]`).textContent(), { timeout: 60_000 }).toBe('stopped');
    await expect.poll(() => page.getByTestId('train-message').textContent()).toMatch(/Stopped at step \d+; the checkpoint of step \d+ is kept/);
    await expect.poll(async () => (await storedRuns(page)).find((r) => r.id === runId)?.status).toBe('stopped');
    const saved = (await storedRuns(page)).find((r) => r.id === runId)!;
    expect(saved.metrics.loss.step.length).toBeGreaterThanOrEqual(2);
    expect(saved.checkpointStep).toBeGreaterThanOrEqual(2);
    lap('stopped');

    // ---- predictions: the run's adapter and the base model on the labelled image
    await page.getByTestId('tab-predictions').click();
    await expect.poll(() => page.getByTestId('predict-pick').count()).toBe(1);
    expect(await page.getByTestId('predict-adapter').inputValue()).toBe(runId);
    await page.locator('input[name="maxNewTokens"]').fill('12');
    await page.getByTestId('predict-button').click();
    await page.getByTestId('prediction').first().waitFor({ timeout: 90_000 });
    await expect.poll(() => page.getByTestId('predict-progress').count(), { timeout: 90_000 }).toBe(0);
    expect(await page.getByTestId('answer-adapter').count()).toBe(1);
    expect(await page.getByTestId('answer-base').count()).toBe(1);
    expect(await page.getByTestId('iou-adapter').textContent()).toMatch(/^IoU (\d\.\d{3}|–)$/);
    expect(await page.getByTestId('predict-mean').textContent()).toMatch(/mean IoU: SFT #1, step \d+: (\d\.\d{3}|–).*base: (\d\.\d{3}|–)/);
    expect(await page.locator('.pred-img rect.bx-label').count()).toBe(1);
    await page.screenshot({ path: join(SHOTS, 'predictions.png'), fullPage: true });
    lap('predictions');

    // ---- export: adapter_model.safetensors with peft's keys and shapes (tiny: hidden 128, 2 KV heads of 16, MLP 320; r = 8)
    await page.getByTestId('tab-export').click();
    const btn = page.getByTestId('export-safetensors');
    await expect.poll(() => btn.isEnabled()).toBe(true);
    const [dl] = await Promise.all([page.waitForEvent('download'), btn.click()]);
    expect(dl.suggestedFilename()).toBe('adapter_model.safetensors');
    const st = readSafetensors(new Uint8Array(await readFile((await dl.path())!)));
    const shape = (k: string) => st.tensors.get(`base_model.model.model.language_model.layers.${k}.weight`)?.shape;
    expect(shape('0.self_attn.q_proj.lora_A')).toEqual([8, 128]);
    expect(shape('0.self_attn.q_proj.lora_B')).toEqual([128, 8]);
    expect(shape('1.self_attn.k_proj.lora_B')).toEqual([32, 8]);
    expect(shape('1.mlp.down_proj.lora_A')).toEqual([8, 320]);
    expect(st.tensors.size).toBe(2 * 7 * 2);
    expect([...st.tensors.values()].every((t) => t.dtype === 'F32')).toBe(true);
    const [cfg] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-config').click()]);
    const json = JSON.parse(await readFile((await cfg.path())!, 'utf8'));
    expect(json).toMatchObject({ peft_type: 'LORA', r: 8, lora_alpha: 16, base_model_name_or_path: 'patchwork-builtin-tiny' });
    expect(await page.getByTestId('adapter-config').textContent()).toContain('"r": 8');
    lap('exported');

    // ---- reload: dataset, box and run history (with its charts) are still there
    await page.reload();
    await page.getByTestId('tab-dataset').click();
    // the labeler reopens on the labelled image, with its box and question
    await page.getByTestId('labeler').waitFor({ timeout: 15_000 });
    expect(await page.getByTestId('box-question').inputValue()).toBe('Where is the house?');
    await page.getByTestId('labeler-back').click();
    await expect.poll(() => page.getByTestId('thumb').count(), { timeout: 15_000 }).toBe(3);
    expect(await page.getByTestId('box-count').allTextContents()).toEqual(['0 boxes', '1 box', '0 boxes']);
    await page.getByTestId('tab-train').click();
    const row = page.locator(`[data-run="${runId}"]`);
    await row.waitFor();
    expect(await row.getByTestId('run-status').textContent()).toBe('stopped');
    expect(Number(await row.locator('td').nth(4).textContent())).toBeGreaterThanOrEqual(2);
    expect(await page.locator('figure[data-metric="Loss"] canvas').count()).toBe(1);
    expect(await page.locator('figure[data-metric="Loss"] .chart-legend li').count()).toBe(1);
    lap('reloaded');
    expect(errors).toEqual([]);
    await page.close();
  });
});
