// The Playground in the built app on WebGPU (SwiftShader), on the built-in tiny model. A random tiny
// model never answers with a box, so the adapter is a real one: trained by the CLI on the fixture's
// one grounding example until its greedy answer reproduces the box (scripts/playground_adapter.ts,
// e2e/fixtures/playground/), imported on the Export screen. Then, on the Playground: the fixture's
// PNG dropped in, its question asked with the adapter on and off side by side. The answer text
// grows token by token (recorded in the page by a MutationObserver: several distinct texts, not one
// final write); the box appears on the image while the answer is still streaming, at the answer's
// box mapped from the resized frame (112×84) back to the 120×90 original; the base model answers in
// its own pane. Stop cancels an answer mid-stream and the next question is answered in full again;
// the same PNG added to a dataset and picked there gets the same answer. The sampling defaults say
// where they come from (the tiny model's generation_config.json: greedy, its eos ids; the rest
// transformers'); while an answer streams, Train and Predictions wait, naming why.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { launch, ROOT, serveDist, watchErrors, type Browser, type StaticServer } from './harness.ts';
import { importAdapterFiles } from './trainUtil.ts';
import { boxToOriginal, parseGroundings } from '../src/data/bbox.ts';
import { dropFiles } from './datasetUtil.ts';

const FIX = join(ROOT, 'e2e', 'fixtures', 'playground');
const QUESTION = 'Where is the red square?';

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

/** In the page: every distinct text of `testId` and, when its first box shows, the pane's status. */
function record(page: import('playwright-core').Page, side: 'adapter' | 'base') {
  return page.evaluate((side) => {
    const w = window as unknown as { pgLog: Record<string, { texts: string[]; boxAt?: string }> };
    w.pgLog ??= {};
    const log = (w.pgLog[side] = { texts: [] as string[], boxAt: undefined as string | undefined });
    const look = () => {
      const pane = document.querySelector(`[data-testid="pg-answer-${side}"]`);
      const t = pane?.querySelector(`[data-testid="pg-text-${side}"]`)?.textContent ?? '';
      if (t && t !== log.texts.at(-1)) log.texts.push(t);
      if (log.boxAt === undefined && pane?.querySelector('rect')) log.boxAt = pane.getAttribute('data-status') ?? '?';
    };
    new MutationObserver(look).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
  }, side);
}
const logOf = (page: import('playwright-core').Page, side: string) =>
  page.evaluate((side) => (window as unknown as { pgLog: Record<string, { texts: string[]; boxAt?: string }> }).pgLog[side], side);
const status = (page: import('playwright-core').Page, side: string) => page.getByTestId(`pg-answer-${side}`).getAttribute('data-status');

describe('playground', () => {
  it('streams the answer, draws its box as it appears, side by side with the base model; Stop cancels', { timeout: 300_000 }, async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    const t0 = Date.now();
    const lap = (what: string) => console.log(`[e2e playground] ${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // ---- the trained adapter onto the tiny model (Export → Import)
    await importAdapterFiles(page, server.url, FIX, /^imported: .*14 modules, r = 8/);
    lap('adapter imported');

    // ---- the image from disk, the question, both sides, greedy, 40 tokens
    await page.getByTestId('tab-playground').click();
    const square = await readFile(join(FIX, 'square.png'));
    await dropFiles(page, '[data-testid="pg-drop"]', [{ name: 'square.png', bytes: square, type: 'image/png' }]);
    await page.getByTestId('pg-results').waitFor();
    expect(await page.getByTestId('pg-image').textContent()).toBe('square.png — 120×90 px');
    await page.getByTestId('pg-question').fill(QUESTION);
    expect(await page.getByTestId('pg-mode-both').isChecked()).toBe(true);
    expect(await page.getByTestId('pg-greedy').isChecked()).toBe(true);
    // the defaults are named: greedy from the model's generation_config.json, the rest transformers' / ours
    await expect.poll(() => page.locator('.pg-sampling').textContent(), { timeout: 30_000 }).toMatch(/Default greedy \(from the model's generation_config\.json: do_sample false\)/);
    expect(await page.locator('.pg-sampling').textContent()).toMatch(/default 1 \(transformers default\).*default 50 \(transformers default\).*default 1 \(transformers default\).*default 128 \(the engine's default\).*default 0 \(our generate's default\)/s);
    expect(await page.getByTestId('pg-gen-notes').textContent()).toBe("Stops at token ids 151645, 151643 (eos_token_id from the model's generation_config.json) and at the end of the chat turn.");
    await page.getByTestId('pg-maxNewTokens').fill('40');
    const askBtn = page.getByTestId('pg-ask');
    await expect.poll(() => askBtn.isEnabled(), { timeout: 30_000 }).toBe(true);
    await record(page, 'adapter');
    await record(page, 'base');
    await askBtn.click();
    await expect.poll(() => status(page, 'adapter'), { timeout: 120_000 }).toBe('done');
    lap('adapter answered');
    const text = (await page.getByTestId('pg-text-adapter').textContent())!;
    const [g] = parseGroundings(text);
    expect(g?.bbox, `answer: ${text}`).toEqual([28, 21, 70, 56]); // what it was trained to answer
    const log = await logOf(page, 'adapter');
    // streamed: the text grew through several distinct prefixes of the final answer
    expect(log.texts.length, JSON.stringify(log.texts)).toBeGreaterThanOrEqual(3);
    log.texts.forEach((t, i) => i && expect(t.startsWith(log.texts[i - 1])).toBe(true));
    expect(log.texts.at(-1)).toBe(text);
    expect(log.boxAt).toBe('streaming'); // drawn as it appeared, before the answer ended
    // the box in original pixels: the resized frame (112×84) mapped back to 120×90
    const want = boxToOriginal(g.bbox, { width: 112, height: 84 }, { width: 120, height: 90 });
    const rect = page.getByTestId('pg-box-adapter');
    expect(await rect.count()).toBe(1);
    const attr = async (a: string) => Number(await rect.getAttribute(a));
    expect([await attr('x'), await attr('y'), await attr('x') + (await attr('width')), await attr('y') + (await attr('height'))].map((v) => +v.toFixed(6))).toEqual(want.map((v) => +v.toFixed(6)));
    expect(await rect.getAttribute('class')).toBe('bx-adapter');
    expect(await page.getByTestId('pg-status-adapter').textContent()).toMatch(/done · \d+ tokens · .* tok\/s · 1 box/);
    // the base model, after it, in its own pane
    await expect.poll(() => status(page, 'base'), { timeout: 120_000 }).toBe('done');
    const base = await logOf(page, 'base');
    expect(base.texts.length).toBeGreaterThanOrEqual(2);
    expect(await page.getByTestId('pg-text-base').textContent()).not.toBe(text);
    expect(await page.locator('.pg-panes.two [data-testid^="pg-answer-"]').count()).toBe(2);
    await page.screenshot({ path: join(ROOT, 'docs', 'screenshots', 'playground.png'), fullPage: true });
    lap('base answered');

    // ---- Stop mid-answer (the base model: it does not end on its own within 400 tokens), then ask again
    await page.getByTestId('pg-mode-base').check();
    await page.getByTestId('pg-maxNewTokens').fill('400');
    await askBtn.click();
    await expect.poll(async () => ((await page.getByTestId('pg-text-base').textContent()) ?? '').length, { timeout: 60_000, interval: 100 }).toBeGreaterThan(0);
    await page.getByTestId('pg-stop').click();
    await expect.poll(() => status(page, 'base'), { timeout: 60_000 }).toBe('stopped');
    const tokens = Number(/(\d+) tokens/.exec((await page.getByTestId('pg-status-base').textContent())!)?.[1]);
    expect(tokens).toBeGreaterThan(0);
    expect(tokens).toBeLessThan(400);
    lap(`stopped after ${tokens} tokens`);
    await page.getByTestId('pg-maxNewTokens').fill('40');
    await page.getByTestId('pg-mode-adapter').check();
    await expect.poll(() => askBtn.isEnabled()).toBe(true);
    await askBtn.click();
    await expect.poll(() => status(page, 'adapter'), { timeout: 120_000 }).toBe('done');
    expect(await page.getByTestId('pg-text-adapter').textContent()).toBe(text);
    expect(await page.getByTestId('pg-answer-base').count()).toBe(0);
    lap('asked again');

    // ---- the same image picked from a dataset (its min / max pixels: the defaults, so the same frame)
    await page.getByTestId('tab-dataset').click();
    await page.getByTestId('drop-zone').waitFor();
    await dropFiles(page, '[data-testid="drop-zone"]', [{ name: 'square.png', bytes: square, type: 'image/png' }]);
    await expect.poll(() => page.getByTestId('thumb').count(), { timeout: 15_000 }).toBe(1);
    await page.getByTestId('tab-playground').click();
    await page.getByTestId('pg-pick').click();
    await expect.poll(() => page.locator('[data-testid="pg-pick"].on').count()).toBe(1);
    expect(await page.getByTestId('pg-answer-adapter').getAttribute('data-status')).toBe('none'); // a new image clears the answers
    await askBtn.click();
    await expect.poll(() => status(page, 'adapter'), { timeout: 120_000 }).toBe('done');
    expect(await page.getByTestId('pg-text-adapter').textContent()).toBe(text);
    expect(await page.getByTestId('pg-box-adapter').count()).toBe(1);
    lap('dataset image');

    // ---- while an answer streams, Train and Predictions wait, saying why; after Stop they do not
    const busy = 'The Playground is answering: stop the answer first (Stop on the Playground screen) or wait for it to end.';
    await page.getByTestId('pg-mode-base').check();
    await page.getByTestId('pg-maxNewTokens').fill('400');
    await askBtn.click();
    await expect.poll(() => status(page, 'base'), { timeout: 60_000 }).toBe('streaming');
    await page.getByTestId('tab-train').click();
    await expect.poll(() => page.getByTestId('train-reason').textContent(), { timeout: 15_000 }).toBe(busy);
    expect(await page.getByTestId('train-button').isDisabled()).toBe(true);
    await page.getByTestId('tab-predictions').click();
    await expect.poll(() => page.getByTestId('predict-button').isDisabled()).toBe(true);
    expect(await page.getByText(busy).count()).toBe(1);
    await page.getByTestId('tab-playground').click();
    expect(await status(page, 'base')).toBe('streaming');
    await page.getByTestId('pg-stop').click();
    await expect.poll(() => status(page, 'base'), { timeout: 60_000 }).toBe('stopped');
    await page.getByTestId('tab-train').click();
    await expect.poll(() => page.getByTestId('train-reason').textContent()).not.toBe(busy);
    await page.getByTestId('tab-playground').click();
    await page.getByTestId('pg-maxNewTokens').fill('40');
    lap('train waited for the answer');

    // ---- a bad setting is named and disables Ask; Reset brings back the defaults
    await page.getByTestId('pg-greedy').uncheck();
    await page.getByTestId('pg-topP').fill('1.5');
    await expect.poll(() => page.locator('.pg-sampling .field-error').textContent()).toMatch(/Top-p must be greater than 0 and at most 1/);
    await expect.poll(() => askBtn.isEnabled()).toBe(false);
    await page.getByTestId('pg-repetitionPenalty').fill('0');
    await expect.poll(() => page.locator('.pg-sampling').textContent()).toMatch(/Repetition penalty must be greater than 0 and at most 10/);
    await page.getByTestId('pg-defaults').click();
    // the fields follow the store in an effect after the click's render: poll
    await expect.poll(() => page.getByTestId('pg-topP').inputValue()).toBe('1');
    await expect.poll(() => page.getByTestId('pg-repetitionPenalty').inputValue()).toBe('1');
    await expect.poll(() => page.getByTestId('pg-maxNewTokens').inputValue()).toBe('128');
    await expect.poll(() => page.getByTestId('pg-greedy').isChecked()).toBe(true);
    await expect.poll(() => askBtn.isEnabled()).toBe(true);
    expect(errors).toEqual([]);
    await page.close();
  });
});
