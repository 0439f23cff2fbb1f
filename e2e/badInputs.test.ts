// Bad inputs in the studio, each ending in a message the user can act on (or a correct result):
// empty / unlabelled / wrong-kind datasets disable Train with the reason and create no run; absurd
// step counts warn next to the field without blocking, invalid ones block; an unreachable hub
// endpoint, an unknown repo and a gated repo are named as such; choosing a class with a box selected
// relabels it visibly (with Undo), without one it sets the class of new boxes; a tab that crashes
// mid-run loses no step its charts showed and the resumed run's chart has no gap; predictions ask
// every question of an image and say when an answer holds no box. Screenshots of the changed screens
// go to docs/screenshots/.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { launch, ROOT, serveDist, watchErrors, type Browser, type StaticServer } from './harness.ts';
import { dragBox, dropFiles, imagePoint, newDataset, scene, storedRecords } from './datasetUtil.ts';
import { labelledDataset } from './trainUtil.ts';

let server: StaticServer;
let browser: Browser;
let hub: Server;
let hubUrl: string;
let closedUrl: string;

/**
 * A stand-in for huggingface.co's error answers (with its CORS headers): unknown repos 401
 * RepoNotFound, "patchwork/gated" 401 GatedRepo, revision "v9" of "patchwork/tiny" 404 RevisionNotFound.
 */
function startHub(): Promise<void> {
  hub = createServer((req, res) => {
    const cors = { 'access-control-allow-origin': '*', 'access-control-allow-headers': '*', 'access-control-expose-headers': 'x-error-code, x-error-message' };
    if (req.method === 'OPTIONS') return res.writeHead(204, cors).end();
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const code = path.startsWith('/patchwork/gated/') ? 'GatedRepo' : path.startsWith('/patchwork/tiny/resolve/v9/') ? 'RevisionNotFound' : 'RepoNotFound';
    res.writeHead(code === 'RevisionNotFound' ? 404 : 401, { ...cors, 'x-error-code': code, 'x-error-message': code }).end(code);
  });
  return new Promise((ok) => hub.listen(0, '127.0.0.1', () => ok()));
}

beforeAll(async () => {
  server = await serveDist();
  browser = await launch();
  await startHub();
  hubUrl = `http://127.0.0.1:${(hub.address() as { port: number }).port}`;
  // a port nothing listens on
  const s = createServer();
  await new Promise<void>((ok) => s.listen(0, '127.0.0.1', () => ok()));
  closedUrl = `http://127.0.0.1:${(s.address() as { port: number }).port}`;
  await new Promise<void>((ok) => s.close(() => ok()));
});
afterAll(async () => {
  await browser?.close();
  await server?.close();
  await new Promise<void>((ok) => (hub ? hub.close(() => ok()) : ok()));
});

const SHOTS = join(ROOT, 'docs', 'screenshots');
const tooltip = (page: Page) => page.getByTestId('train-tooltip').getAttribute('title');
const fieldWarn = (page: Page, name: string) => page.locator('label.field', { has: page.locator(`input[name="${name}"]`) }).locator('.field-warn');
const fieldError = (page: Page, name: string) => page.locator('label.field', { has: page.locator(`input[name="${name}"]`) }).locator('.field-error');

/** Per-step metric rows of a run as stored (what a reopened tab draws), in step order. */
function storedSteps(page: Page, runId: string): Promise<number[]> {
  return page.evaluate(async (runId) => {
    if (!(await indexedDB.databases()).some((d) => d.name === 'patchwork-metrics')) return [];
    return new Promise<number[]>((ok, bad) => {
      const r = indexedDB.open('patchwork-metrics');
      r.onerror = () => bad(r.error);
      r.onsuccess = () => {
        const g = r.result.transaction('steps').objectStore('steps').getAll();
        g.onsuccess = () => {
          ok((g.result as { runId: string; step: number; values: Record<string, number> }[]).filter((x) => x.runId === runId && 'loss' in x.values).map((x) => x.step));
          r.result.close();
        };
      };
    });
  }, runId);
}

async function chooseHub(page: Page, id: string, endpoint: string): Promise<void> {
  await page.getByRole('radio', { name: 'Hugging Face Hub' }).click();
  await page.locator('input[name="hubId"]').fill(id);
  await page.locator('input[name="endpoint"]').fill(endpoint);
}

/** Clicks Train and returns the run's end message (the model never loads in these cases). */
async function trainMessage(page: Page): Promise<string> {
  const train = page.getByTestId('train-button');
  await expect.poll(async () => `${await train.isEnabled()} ${await tooltip(page)}`, { timeout: 30_000 }).toMatch(/^true /);
  const runs = await page.getByTestId('run-row').count();
  await train.click();
  await expect.poll(() => page.getByTestId('run-row').count(), { timeout: 30_000 }).toBe(runs + 1);
  await expect.poll(() => page.getByTestId('run-state').count(), { timeout: 60_000 }).toBe(0);
  await expect.poll(() => page.getByTestId('train-message').count(), { timeout: 10_000 }).toBe(1);
  return (await page.getByTestId('train-message').textContent()) ?? '';
}

describe('bad inputs in the studio', () => {
  it('datasets with nothing to train on, absurd steps, class choice, unreachable / unknown / gated hub models', { timeout: 240_000 }, async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url + '#dataset');

    // 1. an empty dataset: Train is disabled with the reason, and no run is created
    await newDataset(page);
    await page.getByTestId('tab-train').click();
    await expect.poll(() => tooltip(page), { timeout: 30_000 }).toMatch(/^dataset ".+" is empty: add images on the Dataset screen first$/);
    expect(await page.getByTestId('train-button').isDisabled()).toBe(true);
    expect(await page.getByTestId('train-reason').textContent()).toMatch(/^Dataset ".+" is empty: add images on the Dataset screen first\.$/);
    expect(await page.getByTestId('run-row').count()).toBe(0);

    // 2. images but no labels
    await page.getByTestId('tab-dataset').click();
    await page.getByTestId('drop-zone').waitFor();
    await dropFiles(page, '[data-testid="drop-zone"]', [0, 1].map((k) => ({ name: `b${k}.png`, bytes: scene(k), type: 'image/png' })));
    await expect.poll(() => page.getByTestId('thumb').count(), { timeout: 15_000 }).toBe(2);
    await page.getByTestId('tab-train').click();
    await expect.poll(() => tooltip(page), { timeout: 15_000 }).toMatch(/^dataset ".+" has 2 images but none labelled: label at least one on the Dataset screen$/);
    expect(await page.getByTestId('train-button').isDisabled()).toBe(true);

    // 3. class choice: without a selection it sets the class of new boxes; with a box selected it relabels it, visibly, with Undo
    await page.getByTestId('tab-dataset').click();
    await page.getByTestId('thumb').first().locator('.tile-img').click();
    await page.locator('.stage-img').waitFor();
    await page.getByTestId('class-input').fill('sun, house');
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator('.class-chip').count()).toBe(2);
    await page.locator('.stage').click({ position: { x: 5, y: 5 } });
    expect(await page.getByTestId('class-mode').textContent()).toBe('1–9: class of new boxes');
    await page.keyboard.press('2');
    await expect.poll(() => page.getByTestId('labeler-flash').textContent()).toBe('New boxes: "house"');
    await dragBox(page, await imagePoint(page, 40, 100, 320, 240), await imagePoint(page, 130, 190, 320, 240));
    await expect.poll(() => page.getByTestId('box-row').count()).toBe(1);
    expect(await page.getByTestId('box-label').inputValue()).toBe('house');
    // the new box is selected: the panel says what 1-9 does now
    expect(await page.getByTestId('class-mode').textContent()).toBe('1–9 relabel box 1');
    await page.keyboard.press('1');
    await expect.poll(() => page.getByTestId('labeler-flash').textContent()).toBe('Box 1: "house" → "sun" · Ctrl+Z undoesUndo');
    expect(await page.getByTestId('box-label').inputValue()).toBe('sun');
    await mkdir(SHOTS, { recursive: true });
    await page.screenshot({ path: join(SHOTS, 'labeler-relabel.png') });
    await page.getByTestId('flash-undo').click();
    expect(await page.getByTestId('box-label').inputValue()).toBe('house');
    // pressing the class the box already has changes nothing and says so
    await page.keyboard.press('2');
    await expect.poll(() => page.getByTestId('labeler-flash').textContent()).toBe('Box 1 is already "house"');
    type Rec = { labels: { boxes: { label: string }[] } };
    await expect.poll(async () => (await storedRecords<Rec>(page, 'images')).flatMap((r) => r.labels.boxes.map((b) => b.label))).toEqual(['house']);

    // 4. records of another kind than the method trains on
    await page.getByTestId('tab-train').click();
    await page.getByRole('radio', { name: /^DPO/ }).click();
    await expect.poll(() => tooltip(page), { timeout: 15_000 }).toMatch(/^dataset ".+" has 1 question\/answer \(SFT\) record, but DPO trains on preference-pair \(DPO\) records: pick the matching method or dataset$/);
    await page.getByRole('radio', { name: /^SFT/ }).click();
    await expect.poll(() => tooltip(page), { timeout: 15_000 }).toBe('Start training with these settings');
    expect(await page.getByTestId('run-row').count()).toBe(0); // none of the refusals made a run

    // 5. absurd step counts warn next to the field without blocking; invalid ones block
    await page.locator('input[name="optim.maxSteps"]').fill('1000000');
    // (the estimate's step time, once known, adds how long that would take)
    await expect.poll(() => fieldWarn(page, 'optim.maxSteps').textContent()).toMatch(/^1,000,000 steps is far beyond what a LoRA run needs \(hundreds to a few thousand\); check the number\.( ≈ [\d,.]+ days at [\d.]+ s a step \(1,000,000 steps\)\.)?$/);
    expect(await page.getByTestId('train-button').isEnabled()).toBe(true);
    await page.locator('input[name="optim.maxSteps"]').fill('0');
    // (over 1000 epochs is refused by the config's validate; 200–1000 is legal but absurd)
    await page.locator('input[name="optim.numEpochs"]').fill('500');
    await expect.poll(() => fieldWarn(page, 'optim.numEpochs').textContent()).toMatch(/^500 epochs is far more than LoRA needs \(1–10\)/);
    await page.locator('input[name="optim.numEpochs"]').fill('3');
    await page.locator('input[name="optim.maxSteps"]').fill('400');
    await page.locator('input[name="optim.gradAccumSteps"]').fill('1');
    await expect.poll(() => fieldWarn(page, 'optim.maxSteps').textContent()).toMatch(/^400 steps × 1 sample = 400 passes over the 1 example \(epochs × dataset size would be 3 steps\): the model will only memorise them\./);
    await page.locator('input[name="optim.maxSteps"]').scrollIntoViewIfNeeded();
    await page.screenshot({ path: join(SHOTS, 'train-warnings.png') });
    await page.locator('input[name="optim.maxSteps"]').fill('-5');
    await expect.poll(() => fieldError(page, 'optim.maxSteps').textContent()).toMatch(/Max steps is a whole number from 0 \(= use epochs\) to 1000000\. Got -5\./);
    await expect.poll(() => tooltip(page)).toBe('fix 1 setting first');
    await page.locator('input[name="optim.maxSteps"]').fill('20');
    await page.locator('input[name="optim.warmupSteps"]').fill('0');

    // 6. a hub endpoint nothing listens on: named, and said to be unreachable (not "Failed to fetch")
    await chooseHub(page, 'patchwork/tiny', closedUrl);
    const unreachable = await trainMessage(page);
    expect(unreachable).toMatch(new RegExp(`^Could not reach ${closedUrl.replace(/[.]/g, '\\.')} \\(patchwork/tiny/config\\.json\\): the endpoint is unreachable from this browser \\(.*\\) — check the network or set a mirror endpoint$`));
    await page.screenshot({ path: join(SHOTS, 'train-hub-unreachable.png') });

    // 7. a repo the hub does not have
    await chooseHub(page, 'patchwork/nope', hubUrl);
    expect(await trainMessage(page)).toBe(`hub patchwork/nope@main: config.json: HTTP 401: ${hubUrl} has no repository "patchwork/nope": check the model id (a private repo needs an access token)`);

    // 8. a gated repo
    await chooseHub(page, 'patchwork/gated', hubUrl);
    expect(await trainMessage(page)).toBe(`hub patchwork/gated@main: config.json: HTTP 401: the repo is gated or private; pass an access token (${hubUrl})`);
    // 9. a revision the repo does not have
    await chooseHub(page, 'patchwork/tiny', hubUrl);
    await page.locator('input[name="revision"]').fill('v9');
    expect(await trainMessage(page)).toBe(`hub patchwork/tiny@v9: config.json: HTTP 404: repository "patchwork/tiny" on ${hubUrl} has no revision "v9": check the branch, tag or commit`);
    // those runs failed on their model, with the reason in the history
    const statuses = await page.getByTestId('run-status').allTextContents();
    expect(statuses).toEqual(['failed', 'failed', 'failed', 'failed']);
    expect(await page.locator('.run-error').first().textContent()).toMatch(/has no revision "v9"/);
    expect(errors.filter((e) => !/Failed to load resource|ERR_CONNECTION_REFUSED|401/.test(e))).toEqual([]);
    await page.close();
  });

  it('a tab that crashes mid-run loses no step it showed; the resumed chart has no gap; predictions ask every question and flag answers without a box', { timeout: 480_000 }, async () => {
    const own = await launch();
    const t0 = Date.now();
    const lap = (what: string) => console.log(`[e2e badInputs] ${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    try {
      let page = await own.context.newPage();
      const errors = watchErrors(page);
      await page.goto(server.url + '#dataset');
      await labelledDataset(page); // image 2: a house box, "Where is the house?"
      // a second question on the same image
      await dragBox(page, await imagePoint(page, 230, 20, 320, 240), await imagePoint(page, 290, 80, 320, 240));
      await expect.poll(() => page.getByTestId('box-row').count()).toBe(2);
      await page.getByTestId('box-question').nth(1).fill('Where is the sun?');
      await page.getByTestId('box-label').nth(1).fill('sun');
      await page.keyboard.press('Tab');
      type Rec = { labels: { boxes: { question: string }[] } };
      await expect.poll(async () => (await storedRecords<Rec>(page, 'images')).some((r) => r.labels.boxes.some((b) => b.question === 'Where is the sun?'))).toBe(true);

      lap('labelled');
      // train: Quick try, a checkpoint every 2 steps
      await page.getByTestId('tab-train').click();
      await page.getByRole('button', { name: 'Quick try' }).click();
      await page.locator('input[name="optim.warmupSteps"]').fill('0');
      await page.locator('input[name="optim.saveSteps"]').fill('2');
      const train = page.getByTestId('train-button');
      await expect.poll(() => train.isEnabled(), { timeout: 60_000 }).toBe(true);
      await train.click();
      const step = async (p: Page) => Number((await p.getByTestId('current-step').textContent().catch(() => null)) ?? NaN);
      await expect.poll(() => step(page), { timeout: 180_000, interval: 200 }).toBeGreaterThanOrEqual(3);
      lap('step 3');
      const runId = (await page.getByTestId('run-row').first().getAttribute('data-run'))!;
      // crash the moment a new step is drawn: a write batched for later (the old 1 s throttle) would lose it
      const before = await step(page);
      await expect.poll(() => step(page), { timeout: 120_000, interval: 20 }).toBeGreaterThan(before);
      const shown = await step(page);
      // crash the renderer: no pagehide, no unload, no flush
      const cdp = await page.context().newCDPSession(page);
      const crashed = page.waitForEvent('crash', { timeout: 30_000 });
      void cdp.send('Page.crash').catch(() => undefined); // never answers: the page is gone
      await crashed;
      expect(errors.filter((e) => !/crash/i.test(e))).toEqual([]);

      lap('crashed');
      // reopen: every step the crashed tab showed is there, 1..N without a hole
      page = await own.context.newPage();
      const errors2 = watchErrors(page);
      await page.goto(server.url + '#train');
      const row = page.locator(`[data-run="${runId}"]`);
      await row.waitFor({ timeout: 30_000 });
      expect(await row.getByTestId('run-status').textContent()).toBe('stopped');
      const after = await storedSteps(page, runId);
      expect(after.length).toBeGreaterThanOrEqual(shown);
      expect(after).toEqual(Array.from({ length: after.length }, (_, i) => i + 1));
      expect(Number(await row.locator('td').nth(4).textContent())).toBe(after.length);
      expect(Number((await page.locator('figure[data-metric="Loss"] .chart-step').textContent())?.replace(/\D+/g, ''))).toBe(after.length);

      lap('reopened');
      // resume: from the last checkpoint, redoing the steps after it; the series stays 1..M, each step once
      await row.getByTestId('run-resume').click();
      await expect.poll(() => step(page), { timeout: 180_000, interval: 200 }).toBeGreaterThanOrEqual(after.length + 2);
      await page.getByTestId('stop-button').click();
      await expect.poll(() => row.getByTestId('run-status').textContent(), { timeout: 90_000 }).toBe('stopped');
      const resumed = await storedSteps(page, runId);
      expect(resumed.length).toBeGreaterThanOrEqual(after.length + 2);
      expect(resumed).toEqual(Array.from({ length: resumed.length }, (_, i) => i + 1));

      lap('resumed and stopped');
      // predictions, base model: both questions of the image are asked; an answer without a box says so
      await page.getByTestId('tab-predictions').click();
      await expect.poll(() => page.getByTestId('predict-pick').count()).toBe(1);
      await page.getByTestId('predict-adapter').selectOption('');
      await page.locator('input[name="maxNewTokens"]').fill('6');
      await page.getByTestId('predict-button').click();
      await expect.poll(() => page.getByTestId('prediction').count(), { timeout: 120_000 }).toBe(2);
      await expect.poll(() => page.getByTestId('predict-progress').count(), { timeout: 120_000 }).toBe(0);
      expect(await page.getByTestId('pred-question').allTextContents()).toEqual(['Where is the house?', 'Where is the sun?']);
      expect(await page.getByTestId('pred-qindex').allTextContents()).toEqual([' (question 1 of 2)', ' (question 2 of 2)']);
      // six tokens of an untrained model: no parseable box, said in words, scored 0 (not left blank)
      lap('predictions');
      const nobox = page.getByTestId('nobox-base');
      expect(await nobox.count()).toBe(2);
      expect(await nobox.first().textContent()).toMatch(/^no box found in: .+/);
      expect(await page.getByTestId('iou-base').allTextContents()).toEqual(['IoU 0.000', 'IoU 0.000']);
      expect(await page.getByTestId('predict-mean').textContent()).toMatch(/base: 0\.000/);
      await page.screenshot({ path: join(SHOTS, 'predictions-nobox.png'), fullPage: true });
      expect(errors2).toEqual([]);
    } finally {
      await own.close();
    }
  });
});
