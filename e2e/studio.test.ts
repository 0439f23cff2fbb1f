// The built studio in headless Chromium: the engine worker gets a WebGPU device, reports its
// adapter and limits, and its self-test kernel matches the CPU; every screen renders.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { launch, ROOT, serveDist, watchErrors, type Browser, type StaticServer } from './harness.ts';

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

describe('studio on WebGPU (SwiftShader)', () => {
  it('reports the adapter and its limits, and the worker self-test passes', async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url + '#train');
    const line = page.getByTestId('selftest-line').first();
    await expect.poll(() => line.textContent(), { timeout: 30_000 }).toMatch(/GPU self-test: (PASS|FAIL|ERROR)/);
    expect(await line.textContent()).toMatch(/GPU self-test: PASS, max error \d\.\d\de[-+]\d+/);

    const info = page.getByTestId('gpu-info').first();
    expect(await info.getByTestId('gpu-adapter').textContent()).toMatch(/swiftshader/i);
    for (const k of ['maxBufferSize', 'maxStorageBufferBindingSize', 'maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup']) {
      const v = await info.locator(`dd[data-limit="${k}"]`).first().textContent();
      expect(v, k).toMatch(/\d/);
    }
    // the device was created at the adapter's maxima, not the 128 MiB default binding size
    expect(await info.locator('dd[data-limit="maxStorageBufferBindingSize"]').first().textContent()).not.toMatch(/^128\.0 MiB/);
    expect(await info.getByTestId('gpu-f16').textContent()).toMatch(/^(yes|no)/);
    expect(await page.getByTestId('selftest').textContent()).toMatch(/matmul y = x·Wᵀ \+ b, W in BF16 \(shaders\/matmul\.wgsl/);
    // GPU and CPU samples are shown side by side
    const cells = await page.locator('.selftest-table tbody tr').allTextContents();
    expect(cells[0]).toMatch(/^GPU/);
    expect(cells[1]).toMatch(/^CPU/);
    // the header badge names the adapter
    expect(await page.getByTestId('gpu-badge').textContent()).toMatch(/WebGPU · .*swiftshader/i);
    // nothing to train on in a fresh profile: the button says why instead of pretending
    expect(await page.getByTestId('train-button').isDisabled()).toBe(true);
    await expect.poll(() => page.getByTestId('train-tooltip').getAttribute('title')).toBe('add images on the Dataset screen first');
    expect(errors).toEqual([]);
    await page.close();
  });

  it('keeps settings and run history across a reload; charts overlay the runs with smoothing', async () => {
    const own = await launch(); // its own profile, so the screenshots never show these runs
    const page = await own.context.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url + '#train');
    const lr = page.locator('input[name="optim.learningRate"]');
    await lr.fill('0.0005');
    await page.getByRole('radio', { name: /^DPO/ }).click();
    await page.locator('input[name="dpo.beta"]').fill('0.25');
    const savedBeta = () =>
      page.evaluate(
        () =>
          new Promise<number | undefined>((ok) => {
            const r = indexedDB.open('patchwork-runs');
            r.onsuccess = () => {
              const g = r.result.transaction('kv').objectStore('kv').get('train-config');
              g.onsuccess = () => ok(g.result?.state?.config?.dpo?.beta);
            };
          }),
      );
    await expect.poll(savedBeta).toBe(0.25);
    await page.reload();
    expect(await lr.inputValue()).toBe('0.0005');
    expect(await page.getByRole('radio', { name: /^DPO/ }).getAttribute('aria-checked')).toBe('true');
    expect(await page.locator('input[name="dpo.beta"]').inputValue()).toBe('0.25');

    // Two runs as the engine's progress callback records them (one interrupted while running).
    await page.evaluate(async () => {
      const db = await new Promise<IDBDatabase>((ok, bad) => {
        const r = indexedDB.open('patchwork-runs');
        r.onsuccess = () => ok(r.result);
        r.onerror = () => bad(r.error);
      });
      const get = (k: string) => new Promise<any>((ok) => { const r = db.transaction('kv').objectStore('kv').get(k); r.onsuccess = () => ok(r.result); });
      const config = (await get('train-config')).state.config;
      const steps = Array.from({ length: 40 }, (_, i) => i + 1);
      const series = (f: (s: number) => number) => ({ step: steps, value: steps.map(f) });
      const run = (id: string, name: string, color: string, method: string, status: string, k: number) => ({
        id, name, color, method, status, model: 'tiny', createdAt: Date.now(), config, visible: true,
        metrics: {
          loss: series((s) => 2 * Math.exp(-s / (10 * k)) + 0.3 * Math.sin(s * 1.7)),
          lr: series((s) => 2e-4 * Math.min(1, s / 5)),
          ...(method === 'dpo' ? { 'rewards/margins': series((s) => s / 40) } : {}),
        },
      });
      const value = { state: { runs: [run('a', 'first', '#4e79a7', 'sft', 'done', 1), run('b', 'second', '#f28e2b', 'dpo', 'running', 2)] }, version: 1 };
      await new Promise((ok) => { const t = db.transaction('kv', 'readwrite'); t.objectStore('kv').put(value, 'runs'); t.oncomplete = ok; });
      db.close();
    });
    await page.reload();
    const history = page.getByTestId('run-history');
    await history.waitFor();
    const rows = await history.locator('tbody tr').allTextContents();
    expect(rows.length).toBe(2);
    expect(rows[0]).toMatch(/DPO.*stopped/); // newest first; a run cut off by the reload is stopped
    expect(rows[1]).toMatch(/SFT.*done/);

    const loss = page.locator('figure[data-metric="Loss"]');
    expect(await loss.locator('canvas').count()).toBe(1);
    expect(await loss.locator('.chart-legend li').count()).toBe(2);
    expect(await page.locator('figure[data-metric="rewards/margins"] canvas').count()).toBe(1); // method metrics get their own chart
    // smoothing 0 shows the raw last value; a high smoothing shows the EMA, the raw one in parentheses
    const slider = page.getByRole('slider', { name: 'Smoothing' });
    await slider.fill('0');
    const raw = await loss.locator('.chart-legend li').first().locator('.legend-value').textContent();
    await slider.fill('0.9');
    const smoothed = await loss.locator('.chart-legend li').first().locator('.legend-value').textContent();
    expect(smoothed).toMatch(/^[-\d.e]+ \([-\d.e]+\)$/);
    expect(smoothed).toContain(`(${raw})`);
    expect(smoothed!.split(' ')[0]).not.toBe(raw);
    // hiding a run removes it from the charts
    await history.locator('tbody tr').first().locator('input[type="checkbox"]').uncheck();
    expect(await loss.locator('.chart-legend li').count()).toBe(1);
    // the series those older runs carried were moved into per-step rows: once the history is saved again
    // (without series), a reload still draws them
    const kvSeries = () =>
      page.evaluate(
        () =>
          new Promise<number>((ok) => {
            const r = indexedDB.open('patchwork-runs');
            r.onsuccess = () => {
              const g = r.result.transaction('kv').objectStore('kv').get('runs');
              g.onsuccess = () => ok((g.result?.state?.runs ?? []).reduce((n: number, x: { metrics?: object }) => n + Object.keys(x.metrics ?? {}).length, 0));
            };
          }),
      );
    await expect.poll(kvSeries, { timeout: 10_000 }).toBe(0);
    await page.reload();
    await history.waitFor();
    expect(await loss.locator('.chart-legend li').count()).toBe(1); // the hidden run stays hidden
    expect(await loss.locator('.chart-step').textContent()).toBe('step 40');
    await history.locator('tbody tr').first().locator('input[type="checkbox"]').check();
    expect(await loss.locator('.chart-legend li').count()).toBe(2);
    expect(await page.locator('figure[data-metric="rewards/margins"] canvas').count()).toBe(1); // the DPO run's own series
    expect(errors).toEqual([]);
    await own.close();
  });

  it('takes a screenshot of each screen', async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    const dir = join(ROOT, 'docs', 'screenshots');
    await mkdir(dir, { recursive: true });
    await page.goto(server.url);
    await expect.poll(() => page.getByTestId('gpu-badge').textContent(), { timeout: 30_000 }).toMatch(/WebGPU ·/);
    for (const tab of ['dataset', 'train', 'predictions', 'export']) {
      await page.getByTestId(`tab-${tab}`).click();
      await expect.poll(() => page.locator('main').getAttribute('data-screen')).toBe(tab);
      if (tab === 'train') await expect.poll(() => page.getByTestId('selftest-line').textContent(), { timeout: 30_000 }).toMatch(/PASS/);
      expect(await page.evaluate(() => location.hash)).toBe(`#${tab}`);
      // predictions.png (with results) and train-running.png are taken by e2e/train.test.ts
      if (tab !== 'predictions') await page.screenshot({ path: join(dir, `${tab}.png`), fullPage: tab === 'train' });
    }
    expect(errors).toEqual([]);
    await page.close();
  });
});
