// Helpers for the training e2e tests: a labelled dataset made through the UI, and a run started on
// the built-in tiny model with the Quick try preset.
import { expect } from 'vitest';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { dragBox, dropFiles, imagePoint, scene, storedRecords } from './datasetUtil.ts';

/** Drops 3 scenes (320×240) and draws one box with a question on the second; waits until it is stored. */
export async function labelledDataset(page: Page, question = 'Where is the house?'): Promise<void> {
  await page.getByTestId('drop-zone').waitFor();
  await dropFiles(page, '[data-testid="drop-zone"]', [0, 1, 2].map((k) => ({ name: `scene${k}.png`, bytes: scene(k), type: 'image/png' })));
  await expect.poll(() => page.getByTestId('thumb').count(), { timeout: 15_000 }).toBe(3);
  await page.getByTestId('thumb').nth(1).locator('.tile-img').click();
  await page.locator('.stage-img').waitFor();
  await dragBox(page, await imagePoint(page, 40, 30, 320, 240), await imagePoint(page, 200, 150, 320, 240));
  await expect.poll(() => page.getByTestId('box-row').count()).toBe(1);
  await page.getByTestId('box-question').fill(question);
  await page.getByTestId('box-label').fill('house');
  await page.keyboard.press('Tab');
  type Rec = { labels: { boxes: { question: string }[] } };
  await expect.poll(async () => (await storedRecords<Rec>(page, 'images')).some((r) => r.labels.boxes.some((b) => b.question === question))).toBe(true);
}

/** On the Train screen: Quick try on the tiny model, no warmup, `set` for more settings, then Train. */
export async function startQuickRun(page: Page, set: Record<string, string> = {}): Promise<void> {
  await page.getByTestId('tab-train').click();
  await page.getByRole('button', { name: 'Quick try' }).click();
  for (const [name, v] of Object.entries({ 'optim.warmupSteps': '0', ...set })) await page.locator(`input[name="${name}"]`).fill(v);
  const train = page.getByTestId('train-button');
  await expect.poll(() => train.isEnabled(), { timeout: 120_000 }).toBe(true);
  await train.click();
  await page.getByTestId('run-state').waitFor({ timeout: 60_000 });
}

export const currentStep = async (page: Page) => Number((await page.getByTestId('current-step').textContent().catch(() => null)) ?? NaN);

/** One box on each of `n` dropped 320×240 scenes (scene0.png …), with the question and label `each(k)` gives; waits until all are stored. */
export async function labelEach(page: Page, n: number, each: (k: number) => { question: string; label: string; box: [number, number, number, number] }): Promise<void> {
  const ks = [...Array(n).keys()];
  await page.getByTestId('drop-zone').waitFor();
  await dropFiles(page, '[data-testid="drop-zone"]', ks.map((k) => ({ name: `scene${k}.png`, bytes: scene(k), type: 'image/png' })));
  await expect.poll(() => page.getByTestId('thumb').count(), { timeout: 15_000 }).toBe(n);
  for (const k of ks) {
    const { question, label, box } = each(k);
    await page.getByTestId('thumb').nth(k).locator('.tile-img').click();
    await page.locator('.stage-img').waitFor();
    await dragBox(page, await imagePoint(page, box[0], box[1], 320, 240), await imagePoint(page, box[2], box[3], 320, 240));
    await expect.poll(() => page.getByTestId('box-row').count()).toBe(1);
    await page.getByTestId('box-question').fill(question);
    await page.getByTestId('box-label').fill(label);
    await page.keyboard.press('Tab');
    await page.getByTestId('labeler-back').click();
    await expect.poll(() => page.getByTestId('thumb').count()).toBe(n);
  }
  type Rec = { labels: { boxes: unknown[] } };
  await expect.poll(async () => (await storedRecords<Rec>(page, 'images')).filter((r) => r.labels.boxes.length === 1).length, { timeout: 15_000 }).toBe(n);
}

/** The eval rows IndexedDB holds for a run (what a reload draws): step → metric values, unrounded. */
export function storedEvals(page: Page, runId: string) {
  return page.evaluate(async (runId) => {
    if (!(await indexedDB.databases()).some((d) => d.name === 'patchwork-evals')) return [];
    return new Promise<{ step: number; values: Record<string, number> }[]>((ok, bad) => {
      const r = indexedDB.open('patchwork-evals');
      r.onerror = () => bad(r.error);
      r.onsuccess = () => {
        const g = r.result.transaction('steps').objectStore('steps').getAll();
        g.onsuccess = () => {
          r.result.close();
          ok((g.result as { runId: string; step: number; values: Record<string, number> }[]).filter((x) => x.runId === runId).map((x) => ({ step: x.step, values: x.values })));
        };
      };
    });
  }, runId);
}

/** The run record as persisted in 'patchwork-runs'. */
export function storedRun(page: Page, runId: string) {
  return page.evaluate(async (runId) => {
    type Run = { id: string; status: string; checkpointStep?: number | null; evalImageIds?: string[] };
    return new Promise<Run | undefined>((ok, bad) => {
      const r = indexedDB.open('patchwork-runs');
      r.onerror = () => bad(r.error);
      r.onsuccess = () => {
        const g = r.result.transaction('kv').objectStore('kv').get('runs');
        g.onsuccess = () => {
          r.result.close();
          ok((g.result as { state?: { runs?: Run[] } })?.state?.runs?.find((x) => x.id === runId));
        };
      };
    });
  }, runId);
}

/** Export → Import: the peft adapter in `dir` (adapter_config.json + adapter_model.safetensors) onto the engine's model; waits for its summary. */
export async function importAdapterFiles(page: Page, url: string, dir: string, summary: RegExp): Promise<void> {
  await page.goto(url + '#export');
  const input = page.getByTestId('import-adapter-files');
  await expect.poll(() => input.isEnabled(), { timeout: 60_000 }).toBe(true);
  await input.setInputFiles(['adapter_config.json', 'adapter_model.safetensors'].map((f) => join(dir, f)));
  await expect.poll(() => page.getByTestId('import-adapter-info').textContent().catch(() => ''), { timeout: 120_000 }).toMatch(summary);
}
