// A lost device (here: the GPU process crashes, as after a driver reset) is reported in the UI,
// and "Reconnect GPU" makes a new device on which the self-test passes again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launch, serveDist, watchErrors, type Browser, type StaticServer } from './harness.ts';

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
