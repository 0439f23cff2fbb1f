// Predictions over a whole split in the built app on WebGPU (SwiftShader): two labelled images (two
// grounding questions), a short run on the built-in tiny model, then the Predictions screen over the
// whole dataset with the adapter and the base model: progress, then the numbers and the IoU
// histogram for both, the per-question table (sorting changes its order; a row opens the question
// with its boxes), and the worst-IoU gallery with the labelled and predicted boxes drawn. With no
// eval split in the run's settings the eval-split choice is refused, saying what to choose.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import type { Page } from 'playwright-core';
import { launch, ROOT, serveDist, watchErrors, type Browser, type StaticServer } from './harness.ts';
import { dragBox, imagePoint, storedRecords } from './datasetUtil.ts';
import { currentStep, labelledDataset, startQuickRun } from './trainUtil.ts';

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

/** A second labelled image: a box with its own question on the third scene. */
async function labelThird(page: Page, question: string): Promise<void> {
  await page.getByTestId('labeler-back').click();
  await page.getByTestId('thumb').nth(2).locator('.tile-img').click();
  await page.locator('.stage-img').waitFor();
  await dragBox(page, await imagePoint(page, 120, 60, 320, 240), await imagePoint(page, 300, 220, 320, 240));
  await expect.poll(() => page.getByTestId('box-row').count()).toBe(1);
  await page.getByTestId('box-question').fill(question);
  await page.getByTestId('box-label').fill('tree');
  await page.keyboard.press('Tab');
  type Rec = { labels: { boxes: { question: string }[] } };
  await expect.poll(async () => (await storedRecords<Rec>(page, 'images')).some((r) => r.labels.boxes.some((b) => b.question === question))).toBe(true);
}

const texts = (page: Page, id: string) => page.getByTestId(id).allTextContents();

describe('predictions over a split', () => {
  it('histogram, sortable table, worst-IoU gallery with boxes, adapter vs base', { timeout: 300_000 }, async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    const t0 = Date.now();
    const lap = (what: string) => console.log(`[e2e predictions] ${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    await page.goto(server.url + '#dataset');
    await labelledDataset(page, 'Where is the house?');
    await labelThird(page, 'Where is the tree?');
    lap('dataset labelled');

    // a short run: stop after its first step (a checkpoint is kept)
    await startQuickRun(page);
    await expect.poll(() => currentStep(page), { timeout: 120_000, interval: 250 }).toBeGreaterThanOrEqual(1);
    await page.getByTestId('stop-button').click();
    await expect.poll(() => page.getByTestId('run-status').first().textContent(), { timeout: 60_000 }).toBe('stopped');
    const runId = (await page.getByTestId('run-row').first().getAttribute('data-run'))!;
    lap('trained');

    await page.getByTestId('tab-predictions').click();
    expect(await page.getByTestId('predict-adapter').inputValue()).toBe(runId);
    // the run held out no images: the eval split is refused, naming the way out
    await page.getByTestId('predict-over').selectOption('eval');
    expect(await page.getByTestId('predict-button').isDisabled()).toBe(true);
    expect(await page.locator('.run-buttons').textContent()).toMatch(/held out no images \(eval split 0\): choose the train split or the whole dataset/);
    await page.getByTestId('predict-over').selectOption('all');
    expect(await page.getByTestId('predict-images').count()).toBe(0); // no image picking over a split
    await page.locator('input[name="maxNewTokens"]').fill('8');
    await page.getByTestId('predict-button').click();
    await page.getByTestId('split-progress').waitFor({ timeout: 30_000 });
    expect(await page.getByTestId('predict-cancel').isVisible()).toBe(true); // Cancel while it runs
    await expect.poll(() => page.getByTestId('split-progress').count(), { timeout: 180_000 }).toBe(0);
    expect(await page.getByTestId('predict-error').count()).toBe(0);
    expect(await page.getByTestId('split-info').textContent()).toMatch(/2 grounding questions on 2 images/);
    lap('predicted');

    // numbers for both models
    for (const who of ['adapter', 'base']) {
      expect(await page.getByTestId(`mean-iou-${who}`).textContent()).toMatch(/^\d\.\d{3}$/);
      expect(await page.getByTestId(`parse-rate-${who}`).textContent()).toMatch(/^\d+%$/);
      expect(await page.getByTestId(`acc50-${who}`).textContent()).toMatch(/^\d+%$/);
      expect(await page.getByTestId(`acc75-${who}`).textContent()).toMatch(/^\d+%$/);
    }
    // the histogram: 10 bins per model, each model's counts summing to the 2 questions
    const bars = page.locator('[data-testid="iou-histogram"] [data-testid="hist-bar"]');
    expect(await bars.count()).toBe(20);
    for (const who of ['adapter', 'base']) {
      const counts = await page.locator(`[data-testid="hist-bar"][data-who="${who}"]`).evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-count'))));
      expect(counts.reduce((a, b) => a + b, 0)).toBe(2);
    }

    // the table: both IoUs per question; sorting by question changes the order, again reverses it
    expect(await page.getByTestId('split-row').count()).toBe(2);
    for (const id of ['row-iou', 'row-iou-base']) for (const t of await texts(page, id)) expect(t).toMatch(/^\d\.\d{3}$/);
    await page.getByTestId('sort-question').click();
    expect(await texts(page, 'row-question')).toEqual(['Where is the house?', 'Where is the tree?']);
    await page.getByTestId('sort-question').click();
    expect(await texts(page, 'row-question')).toEqual(['Where is the tree?', 'Where is the house?']);
    await page.getByTestId('sort-image').click();
    expect(await texts(page, 'row-image')).toEqual(['scene1.png', 'scene2.png']);
    // a row opens its question: the image with its labelled box
    await page.getByTestId('split-row').nth(1).click();
    await page.getByTestId('split-detail').waitFor();
    expect(await page.getByTestId('split-detail').textContent()).toContain('scene2.png — Where is the tree?');
    expect(await page.locator('[data-testid="split-detail"] rect.bx-label').count()).toBe(1);

    // the worst-IoU gallery: both questions, the labelled box on each and the predicted boxes of every answer that has one
    const cards = page.getByTestId('worst-card');
    expect(await cards.count()).toBe(2);
    for (let i = 0; i < 2; i++) {
      const card = cards.nth(i);
      expect(await card.locator('rect.bx-label').count()).toBe(1);
      await expect.poll(() => card.locator('img').evaluate((im) => (im as HTMLImageElement).naturalWidth), { timeout: 10_000 }).toBeGreaterThan(0);
      for (const who of ['adapter', 'base']) {
        const noBox = (await card.locator(`.answer-${who} .answer-nobox`).count()) === 1;
        const drawn = await card.locator(`rect.bx-${who}`).count();
        if (noBox) expect(drawn).toBe(0);
        else expect(drawn).toBeGreaterThan(0);
      }
    }
    await mkdir(join(ROOT, 'docs', 'screenshots'), { recursive: true });
    await page.evaluate(() => window.scrollTo(0, 0)); // the sticky header stays on top of the full-page shot
    await page.screenshot({ path: join(ROOT, 'docs', 'screenshots', 'predictions-split.png'), fullPage: true });
    lap('checked');
    expect(errors).toEqual([]);
    await page.close();
  });
});
