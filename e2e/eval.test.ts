// The held-out evaluation in the built app (SwiftShader): two labelled images, an eval split of one
// image (an impossible split is refused on the form first), Train on the tiny model for 4 steps
// evaluating every 2: the page says it is evaluating, eval loss is drawn beside the training loss and
// the grounding metrics get charts of their own, the run's latest eval figures are shown, the eval
// rows reach IndexedDB (patchwork-evals), and after a reload the curves and figures are still there.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { launch, ROOT, serveDist, watchErrors, type Browser, type StaticServer } from './harness.ts';
import { storedRecords } from './datasetUtil.ts';
import { labelEach, storedEvals, storedRun } from './trainUtil.ts';

const SHOTS = join(ROOT, 'docs', 'screenshots');
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

const legend = (page: Page, metric: string) => page.locator(`figure[data-metric="${metric}"] .chart-legend li`).allTextContents();

describe('evaluation in the studio', () => {
  it('eval split → eval curves and figures while training; they survive a reload', { timeout: 300_000 }, async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    const t0 = Date.now();
    const lap = (what: string) => console.log(`[e2e eval] ${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    await page.goto(server.url + '#dataset');
    await labelEach(page, 2, () => ({ question: 'Where is the house?', label: 'house', box: [40, 30, 200, 150] }));
    lap('dataset labelled');

    await page.getByTestId('tab-train').click();
    await page.getByRole('button', { name: 'Quick try' }).click();
    const warmup = page.locator('input[name="optim.warmupSteps"]');
    await expect.poll(() => warmup.inputValue()).toBe('5'); // the preset has rendered (see train.test.ts)
    const fill = async (name: string, v: string) => {
      const el = page.locator(`input[name="${name}"]`);
      await el.fill(v);
      await el.blur();
      await expect.poll(() => el.inputValue()).toBe(v);
    };
    await fill('optim.warmupSteps', '0');
    await fill('optim.maxSteps', '4');
    await fill('eval.evalSteps', '2');
    await fill('eval.evalMaxNewTokens', '8');
    // both images held out: refused on the field, with the numbers, and Train is disabled
    await fill('eval.evalSplit', '2');
    const splitField = page.locator('label.field:has(input[name="eval.evalSplit"])');
    await expect.poll(() => splitField.locator('.field-error').textContent(), { timeout: 15_000 }).toMatch(/holds out 2 of the dataset's 2 images, leaving none to train on: hold out at most 1/);
    expect(await page.getByTestId('train-button').isEnabled()).toBe(false);
    await fill('eval.evalSplit', '1');
    await expect.poll(() => splitField.locator('.field-help').textContent()).toMatch(/^1 of the dataset's 2 images held out, 1 to train on\./);
    const train = page.getByTestId('train-button');
    await expect.poll(() => train.isEnabled(), { timeout: 120_000 }).toBe(true);
    await train.click();
    await page.getByTestId('run-state').waitFor({ timeout: 60_000 });
    const runId = (await page.getByTestId('run-row').first().getAttribute('data-run'))!;

    // training pauses for the evaluation after step 2, and says so
    await page.getByTestId('eval-progress').waitFor({ timeout: 120_000 });
    expect(await page.getByTestId('eval-progress').textContent()).toMatch(/evaluating the held-out split after step 2: \d \/ 1/);
    expect(await page.locator('.run-data').textContent()).toMatch(/1 example.*1 held out for evaluation \(1 of 2 images\)/);
    lap('evaluating');
    // Pause (it acts after the evaluation, or at the latest after step 3): the first evaluation is
    // drawn, eval loss beside the loss, the grounding metrics on their own, the figures in the summary
    await page.getByTestId('pause-button').click();
    await expect.poll(() => page.getByTestId('run-state').getAttribute('data-state'), { timeout: 120_000 }).toBe('paused');
    expect(await page.getByTestId('eval-progress').count()).toBe(0);
    expect(await legend(page, 'Loss')).toEqual([expect.stringMatching(/^SFT #1/), expect.stringMatching(/^SFT #1 \(eval\)/)]);
    expect(await page.locator('figure[data-metric="Eval mean IoU"] canvas').count()).toBe(1);
    expect(await page.getByTestId('run-eval').getAttribute('data-step')).toBe('2');
    expect(await page.getByTestId('run-eval').textContent()).toMatch(/eval @ 2:.*loss \d.*parse rate \d.*mean IoU \d.*acc@0\.5 \d.*acc@0\.75 \d/);
    lap('paused after the eval at step 2');
    await page.getByTestId('resume-button').click();

    // the run ends with an evaluation at step 4
    const status = page.locator(`[data-run="${runId}"] [data-testid="run-status"]`);
    await expect.poll(() => status.textContent(), { timeout: 180_000 }).toBe('done');
    lap('done');
    const rowEval = page.locator(`[data-run="${runId}"] [data-testid="run-row-eval"]`);
    await expect.poll(() => rowEval.getAttribute('data-step')).toBe('4');
    const figures = await rowEval.textContent();
    expect(figures).toMatch(/eval @ 4:.*loss \d.*token accuracy \d.*parse rate \d.*mean IoU \d.*acc@0\.5 \d.*acc@0\.75 \d/);
    const charts = ['Loss', 'Eval parse rate', 'Eval mean IoU', 'Eval acc@IoU 0.5', 'Eval acc@IoU 0.75', 'mean_token_accuracy'];
    for (const m of charts) expect(await page.locator(`figure[data-metric="${m}"] canvas`).count(), m).toBe(1);
    expect(await page.locator('figure[data-metric="Eval mean IoU"] .chart-step').textContent()).toBe('step 4');
    await mkdir(SHOTS, { recursive: true });
    await page.locator('.charts-card').screenshot({ path: join(SHOTS, 'train-eval.png') }); // the charts with the eval lines
    const evalKeys = ['eval_grounding/acc_iou50', 'eval_grounding/acc_iou75', 'eval_grounding/mean_iou', 'eval_grounding/parse_rate', 'eval_loss', 'eval_mean_token_accuracy'];
    expect((await storedEvals(page, runId)).map((e) => ({ step: e.step, keys: Object.keys(e.values).sort() }))).toEqual([{ step: 2, keys: evalKeys }, { step: 4, keys: evalKeys }]);

    // a reload draws the same from IndexedDB (the run record's status is written throttled, once a
    // second: wait for it, as train.test.ts does, so the reload does not race that write)
    await expect.poll(async () => (await storedRun(page, runId))?.status, { timeout: 15_000 }).toBe('done');
    // the run names the image it held out (one of the two)
    const imageIds = (await storedRecords<{ id: string }>(page, 'images')).map((r) => r.id);
    const held = (await storedRun(page, runId))?.evalImageIds;
    expect(held).toHaveLength(1);
    expect(imageIds).toContain(held![0]);
    await page.reload();
    await page.getByTestId('tab-train').click();
    const row = page.locator(`[data-run="${runId}"]`);
    await row.waitFor({ timeout: 30_000 });
    expect(await row.getByTestId('run-status').textContent()).toBe('done');
    expect(await row.getByTestId('run-row-eval').textContent()).toBe(figures);
    for (const m of charts) expect(await page.locator(`figure[data-metric="${m}"] canvas`).count(), m).toBe(1);
    expect(await legend(page, 'Loss')).toEqual([expect.stringMatching(/^SFT #1/), expect.stringMatching(/^SFT #1 \(eval\)/)]);
    expect(await page.locator('figure[data-metric="Eval mean IoU"] .chart-step').textContent()).toBe('step 4');
    lap('reloaded');
    expect(errors).toEqual([]);
    await page.close();
  });
});
