// A lost device (here: the GPU process crashes, as after a driver reset) is reported in the UI,
// and "Reconnect GPU" makes a new device on which the self-test passes again; a run that was
// training when it happened stops with the reason and resumes from its last checkpoint.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launch, serveDist, watchErrors, type Browser, type StaticServer } from './harness.ts';
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

describe('device loss', () => {
  it('is reported with its reason, and Reconnect GPU recovers', async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url + '#train');
    const line = page.getByTestId('selftest-line').first();
    await expect.poll(() => line.textContent(), { timeout: 30_000 }).toMatch(/PASS/);

    const cdp = await browser.context.newCDPSession(page);
    await cdp.send('Browser.crashGpuProcess' as never);
    const lost = page.getByTestId('gpu-lost');
    await lost.waitFor({ timeout: 20_000 });
    const text = (await lost.textContent()) ?? '';
    expect(text).toMatch(/The GPU device was lost \(unknown: .+\)/);
    expect(await page.getByTestId('gpu-badge').textContent()).toMatch(/GPU lost/);
    expect(await page.getByTestId('train-reason').textContent()).toMatch(/GPU device lost/);

    await lost.getByRole('button', { name: 'Reconnect GPU' }).click();
    await expect.poll(() => line.textContent(), { timeout: 30_000 }).toMatch(/GPU self-test: PASS/);
    expect(await page.getByTestId('gpu-lost').count()).toBe(0);
    expect(await page.getByTestId('gpu-badge').textContent()).toMatch(/WebGPU ·/);
    expect(errors).toEqual([]);
    await page.close();
  });
});

describe('device loss during training', () => {
  it('is reported on the run; after Reconnect GPU, Resume reloads the model and continues from the last checkpoint', { timeout: 240_000 }, async () => {
    const own = await launch();
    const page = await own.context.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url + '#dataset');
    await labelledDataset(page);
    await startQuickRun(page, { 'optim.saveSteps': '1' });
    await expect.poll(() => currentStep(page), { timeout: 120_000, interval: 250 }).toBeGreaterThanOrEqual(2);
    const runId = (await page.getByTestId('run-row').first().getAttribute('data-run'))!;
    const row = page.locator(`[data-run="${runId}"]`);
    await expect.poll(() => row.textContent()).toMatch(/checkpoint: step [1-9]/);

    const cdp = await own.context.newCDPSession(page);
    await cdp.send('Browser.crashGpuProcess' as never);
    await page.getByTestId('gpu-lost').waitFor({ timeout: 30_000 });
    await expect.poll(() => row.getByTestId('run-status').textContent(), { timeout: 60_000 }).toBe('stopped');
    const msg = (await page.getByTestId('train-message').textContent()) ?? '';
    expect(msg).toMatch(/The GPU device was lost at step \d+ .*Reconnect the GPU, then Resume continues from the checkpoint of step (\d+)/);
    const ckStep = Number(/checkpoint of step (\d+)/.exec(msg)![1]);
    expect(await row.locator('.run-error').textContent()).toMatch(/GPU device was lost/);

    await page.getByTestId('gpu-lost').getByRole('button', { name: 'Reconnect GPU' }).click();
    await expect.poll(() => page.getByTestId('selftest-line').first().textContent(), { timeout: 30_000 }).toMatch(/GPU self-test: PASS/);
    await row.getByTestId('run-resume').click();
    // the model is loaded again and the run continues after its checkpoint; the chart drops the lost steps
    await expect.poll(() => currentStep(page), { timeout: 120_000, interval: 250 }).toBeGreaterThan(ckStep);
    expect(await row.getByTestId('run-status').textContent()).toBe('running');
    await page.getByTestId('stop-button').click();
    await expect.poll(() => row.getByTestId('run-status').textContent(), { timeout: 60_000 }).toBe('stopped');
    expect(errors).toEqual([]);
    await own.close();
  });
});
