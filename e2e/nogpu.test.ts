// A browser without WebGPU: the studio says what is missing, why, and what to do, and the
// Dataset screen (which needs no GPU) still works.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { launch, ROOT, serveDist, watchErrors, WEBGPU_ARGS, type StaticServer } from './harness.ts';

let server: StaticServer;
beforeAll(async () => {
  server = await serveDist();
});
afterAll(async () => {
  await server?.close();
});

// Removes WebGPU the way a browser without it looks: no `gpu` on Navigator / WorkerNavigator.
const REMOVE_WEBGPU = `(() => {
  for (const C of [globalThis.Navigator, globalThis.WorkerNavigator]) if (C) delete C.prototype.gpu;
})();\n`;

describe('without WebGPU', () => {
  it('navigator.gpu undefined in page and worker: a clear message, and the dataset still works', async () => {
    const browser = await launch();
    try {
      const { context } = browser;
      await context.addInitScript(REMOVE_WEBGPU); // pages only; the worker script is patched below
      let patched = 0;
      await context.route(/\/assets\/trainer\.worker-[^/]*\.js$/, async (route) => {
        patched++;
        const res = await route.fetch();
        await route.fulfill({ response: res, body: REMOVE_WEBGPU + (await res.text()) });
      });
      const page = await context.newPage();
      const errors = watchErrors(page);
      await page.goto(server.url);
      const banner = page.getByTestId('no-webgpu');
      await banner.waitFor({ timeout: 30_000 });
      const text = (await banner.textContent()) ?? '';
      expect(text).toMatch(/WebGPU is not available in this browser/);
      expect(text).toMatch(/navigator\.gpu is undefined in this page and in the engine worker/);
      expect(text).toMatch(/What to do:.*Chrome or Edge/);
      expect(text).toMatch(/Datasets and box labelling work without a GPU/);
      expect(await page.getByTestId('gpu-badge').textContent()).toMatch(/No WebGPU/);
      expect(await page.evaluate(() => 'gpu' in navigator)).toBe(false);
      expect(patched).toBe(1); // the message above came from the worker without WebGPU
      await page.screenshot({ path: join(ROOT, 'docs', 'screenshots', 'no-webgpu.png') });
      // the Dataset screen renders (it needs no GPU)
      await expect.poll(() => page.locator('main').getAttribute('data-screen')).toBe('dataset');
      expect(await page.locator('main').innerHTML()).not.toBe('');
      // training cannot start, and says why
      await page.getByTestId('tab-train').click();
      expect(await page.getByTestId('train-button').isDisabled()).toBe(true);
      expect(await page.getByTestId('train-reason').textContent()).toMatch(/WebGPU unavailable/);
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  });

  it('WebGPU present but no adapter (Chromium on Linux without --enable-unsafe-webgpu)', async () => {
    const browser = await launch(WEBGPU_ARGS.filter((a) => a !== '--enable-unsafe-webgpu'));
    try {
      const page = await browser.context.newPage();
      const errors = watchErrors(page);
      await page.goto(server.url);
      const banner = page.getByTestId('no-webgpu');
      await banner.waitFor({ timeout: 30_000 });
      const text = (await banner.textContent()) ?? '';
      expect(text).toMatch(/WebGPU found no GPU adapter/);
      expect(text).toMatch(/requestAdapter\(\) returned null/);
      expect(text).toMatch(/--enable-unsafe-webgpu/);
      expect(await page.getByTestId('gpu-badge').textContent()).toMatch(/No GPU adapter/);
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
