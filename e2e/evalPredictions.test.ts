// The seams between the eval split and predictions over a split, in the built app (SwiftShader):
// three labelled images, an eval split of one image (the Estimate card counts 2 to train on and 1
// held out), a 2-step run on the tiny model evaluating at the end; then the Predictions screen over
// "the eval split" predicts exactly the image the run held out (RunRecord.evalImageIds) with the
// run's decoding length, and its adapter figures are the run's last eval_grounding/* figures (the
// unrounded values IndexedDB holds, and the ones the run history shows); while predictions run,
// Train is disabled with the reason (and enabled again after Cancel); "the train split" holds the
// other two images.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { launch, serveDist, watchErrors, type Browser, type StaticServer } from './harness.ts';
import { storedRecords } from './datasetUtil.ts';
import { labelEach, storedEvals, storedRun } from './trainUtil.ts';

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

/** Run predictions over what is chosen and wait for them to end without an error, over what `info` names (a short run may end before its progress is seen). */
async function predict(page: Page, info: RegExp): Promise<void> {
  await page.getByTestId('predict-button').click();
  const state = async () => {
    if (await page.getByTestId('predict-error').count()) return `error: ${await page.getByTestId('predict-error').textContent()}`;
    if (await page.getByTestId('split-progress').count()) return 'running';
    return info.test((await page.getByTestId('split-info').textContent().catch(() => '')) ?? '') ? 'done' : 'waiting';
  };
  await expect.poll(state, { timeout: 180_000 }).toBe('done');
}

const FIGURES = { 'parse-rate': 'eval_grounding/parse_rate', 'mean-iou': 'eval_grounding/mean_iou', acc50: 'eval_grounding/acc_iou50', acc75: 'eval_grounding/acc_iou75' } as const;

describe('predictions over the eval split of a run', () => {
  it("predict exactly the held-out image, with the run's last eval figures; Train waits for them", { timeout: 300_000 }, async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    const t0 = Date.now();
    const lap = (what: string) => console.log(`[e2e evalPredictions] ${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    await page.goto(server.url + '#dataset');
    // three scenes, each with one box and its own question
    await labelEach(page, 3, (k) => ({ question: `Where is thing ${k}?`, label: `thing ${k}`, box: [40 + 20 * k, 30, 200, 150 + 20 * k] }));
    lap('dataset labelled');

    await page.getByTestId('tab-train').click();
    await page.getByRole('button', { name: 'Quick try' }).click();
    await expect.poll(() => page.locator('input[name="optim.warmupSteps"]').inputValue()).toBe('5'); // the preset has rendered (see train.test.ts)
    const fill = async (name: string, v: string) => {
      const el = page.locator(`input[name="${name}"]`);
      await el.fill(v);
      await el.blur();
      await expect.poll(() => el.inputValue()).toBe(v);
    };
    await fill('optim.warmupSteps', '0');
    await fill('optim.maxSteps', '2');
    await fill('eval.evalSteps', '0'); // at the end only
    await fill('eval.evalMaxNewTokens', '8');
    await fill('eval.evalSplit', '1');
    await expect.poll(() => page.locator('label.field:has(input[name="eval.evalSplit"]) .field-help').textContent()).toMatch(/^1 of the dataset's 3 images held out, 2 to train on\./);
    // the Estimate card counts the examples trained on, the held-out one apart
    await expect.poll(() => page.getByTestId('estimate-examples').textContent(), { timeout: 60_000 }).toBe('2 to train on; 1 held out for evaluation (1 of 3 images), not trained on');
    const train = page.getByTestId('train-button');
    await expect.poll(() => train.isEnabled(), { timeout: 120_000 }).toBe(true);
    await train.click();
    await page.getByTestId('run-state').waitFor({ timeout: 60_000 });
    const runId = (await page.getByTestId('run-row').first().getAttribute('data-run'))!;
    const status = page.locator(`[data-run="${runId}"] [data-testid="run-status"]`);
    await expect.poll(() => status.textContent(), { timeout: 180_000 }).toBe('done');
    lap('trained');

    // what the run evaluated, and on which image
    await expect.poll(async () => (await storedRun(page, runId))?.status, { timeout: 15_000 }).toBe('done');
    const rec = (await storedRun(page, runId))!;
    expect(rec.checkpointStep).toBe(2);
    expect(rec.evalImageIds).toHaveLength(1);
    const images = await storedRecords<{ id: string; name: string }>(page, 'images');
    const nameOf = new Map(images.map((r) => [r.id, r.name]));
    const heldName = nameOf.get(rec.evalImageIds![0])!;
    expect(heldName).toMatch(/^scene\d\.png$/);
    const evals = await storedEvals(page, runId);
    expect(evals.map((e) => e.step)).toEqual([2]);
    const last = evals[0].values;
    const rowEval = page.locator(`[data-run="${runId}"] [data-testid="run-row-eval"]`);
    await expect.poll(() => rowEval.getAttribute('data-step')).toBe('2');
    // the run history shows those figures (rounded to 4 significant digits)
    for (const key of Object.values(FIGURES)) expect(Number(await rowEval.locator(`[data-metric="${key}"] b`).textContent()), key).toBe(Number(last[key].toPrecision(4)));

    // Predictions over the eval split: the run's adapter, its decoding length
    await page.getByTestId('tab-predictions').click();
    expect(await page.getByTestId('predict-adapter').inputValue()).toBe(runId);
    await page.getByTestId('predict-over').selectOption('eval');
    expect(await page.locator('input[name="maxNewTokens"]').inputValue()).toBe('8');
    expect(await page.getByTestId('eval-compare').getAttribute('data-same')).toBe('true');
    await page.locator('input[name="compare"]').uncheck(); // the adapter alone
    await predict(page, /: 1 grounding question on 1 image$/);
    expect(await page.getByTestId('row-image').allTextContents()).toEqual([heldName]);
    // the adapter's figures ARE the run's last evaluation's (unrounded), and no base model ran
    for (const [id, key] of Object.entries(FIGURES)) expect(Number(await page.getByTestId(`${id}-adapter`).getAttribute('data-value')), key).toBe(last[key]);
    expect(await page.getByTestId('summary-base').count()).toBe(0);
    lap(`eval split predicted (${Object.values(FIGURES).map((k) => `${k} ${last[k]}`).join(', ')})`);

    // a longer prediction over the whole dataset: Train is disabled with the reason while it runs
    await page.locator('input[name="compare"]').check();
    await page.getByTestId('predict-over').selectOption('all');
    await page.locator('input[name="maxNewTokens"]').fill('96');
    await page.getByTestId('predict-button').click();
    await page.getByTestId('split-progress').waitFor({ timeout: 30_000 });
    await page.getByTestId('tab-train').click();
    expect(await train.isDisabled()).toBe(true);
    expect(await page.getByTestId('train-reason').textContent()).toBe('Predictions over a split are running (Predictions screen): cancel them or wait for them to end.');
    expect(await page.getByTestId('train-tooltip').getAttribute('title')).toMatch(/^predictions over a split are running/);
    await page.getByTestId('tab-predictions').click();
    expect(await page.getByTestId('predict-over').inputValue()).toBe('all'); // the screen comes back as it was left
    await page.getByTestId('predict-cancel').click();
    await expect.poll(() => page.getByTestId('split-progress').count(), { timeout: 180_000 }).toBe(0);
    expect(await page.getByTestId('split-info').textContent()).toMatch(/cancelled after \d/);
    await page.getByTestId('tab-train').click();
    await expect.poll(() => train.isEnabled(), { timeout: 10_000 }).toBe(true);
    expect(await page.getByTestId('train-reason').textContent()).toBe('Ready.');
    lap('train waited for the predictions');

    // the train split: the two other images
    await page.getByTestId('tab-predictions').click();
    await page.getByTestId('predict-over').selectOption('train');
    await page.locator('input[name="maxNewTokens"]').fill('4');
    await page.locator('input[name="compare"]').uncheck();
    await predict(page, /: 2 grounding questions on 2 images$/);
    const trainNames = (await page.getByTestId('row-image').allTextContents()).sort();
    expect(trainNames).toEqual(images.map((r) => r.name).filter((n) => n !== heldName).sort());
    lap('train split predicted');

    // a reload keeps them (IndexedDB): the same questions, answers and figures, on the same choice
    const before = { info: await page.getByTestId('split-info').textContent(), rows: await page.getByTestId('row-image').allTextContents(), figures: await Promise.all(Object.keys(FIGURES).map((id) => page.getByTestId(`${id}-adapter`).getAttribute('data-value'))) };
    await page.waitForTimeout(1500); // the store's throttled write (it is flushed at the end, this is belt and braces)
    await page.reload();
    await page.getByTestId('tab-predictions').click();
    await page.getByTestId('split-results').waitFor({ timeout: 30_000 });
    expect(await page.getByTestId('predict-over').inputValue()).toBe('train');
    expect(await page.getByTestId('split-info').textContent()).toBe(before.info);
    expect(await page.getByTestId('row-image').allTextContents()).toEqual(before.rows);
    expect(await Promise.all(Object.keys(FIGURES).map((id) => page.getByTestId(`${id}-adapter`).getAttribute('data-value')))).toEqual(before.figures);
    // deleting the run whose adapter answered deletes them
    page.once('dialog', (d) => void d.accept());
    await page.getByTestId('tab-train').click();
    await page.locator(`[data-run="${runId}"] button:has-text("delete")`).click();
    await expect.poll(() => page.getByTestId('run-row').count(), { timeout: 10_000 }).toBe(0);
    await page.getByTestId('tab-predictions').click();
    await page.getByTestId('predictions-screen').waitFor(); // rendered: the count below is of this screen
    expect(await page.getByTestId('predict-over').inputValue()).toBe('train');
    expect(await page.getByTestId('split-results').count()).toBe(0);
    lap('kept over a reload, gone with the run');
    expect(errors).toEqual([]);
    await page.close();
  });
});
