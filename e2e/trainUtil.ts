// Helpers for the training e2e tests: a labelled dataset made through the UI, and a run started on
// the built-in tiny model with the Quick try preset.
import { expect } from 'vitest';
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
