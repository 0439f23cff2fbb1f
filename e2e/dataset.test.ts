// Datasets in the built app (headless Chromium, real IndexedDB): drop → thumbnails → a box and a
// question → reload keeps everything; JSONL import with malformed lines; bad files; a second tab.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { strFromU8, unzipSync } from 'fflate';
import jpeg from 'jpeg-js';
import { launch, serveDist, watchErrors, type Browser, type StaticServer } from './harness.ts';
import { dragBox, dropFiles, imagePoint, newDataset, png, scene, storedRecords } from './datasetUtil.ts';

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

const pngFile = (name: string, k: number) => ({ name, bytes: scene(k), type: 'image/png' });

describe('datasets', () => {
  it('drop 3 PNGs → 3 thumbnails; draw a box and type a question; reload keeps dataset, images and box', async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url + '#dataset');
    await page.getByTestId('drop-zone').waitFor();
    await dropFiles(page, '[data-testid="drop-zone"]', [pngFile('a.png', 0), pngFile('b.png', 1), pngFile('c.png', 2)]);
    await expect.poll(() => page.getByTestId('thumb').count(), { timeout: 15_000 }).toBe(3);
    expect(await page.getByTestId('dataset-item').count()).toBe(1);
    expect(await page.getByTestId('notice').first().textContent()).toMatch(/Added 3 images/);

    // Label the second image.
    await page.getByTestId('thumb').nth(1).locator('.tile-img').click();
    await page.getByTestId('labeler').waitFor();
    await page.locator('.stage-img').waitFor();
    await dragBox(page, await imagePoint(page, 40, 30, 320, 240), await imagePoint(page, 200, 150, 320, 240));
    await expect.poll(() => page.getByTestId('box-row').count()).toBe(1);
    const coords = await page.getByTestId('box-coords').first().textContent();
    const [x1, y1, x2, y2] = coords!.replace(/[[\]\s]/g, '').split(',').map(Number);
    for (const [got, want] of [[x1, 40], [y1, 30], [x2, 200], [y2, 150]]) expect(Math.abs(got - want)).toBeLessThanOrEqual(1);
    await page.getByTestId('box-question').fill('Where is the house?');
    await page.getByTestId('box-label').fill('house');
    await page.keyboard.press('Tab');
    type Rec = { labels: { boxes: { question: string; label: string }[] } };
    await expect.poll(async () => (await storedRecords<Rec>(page, 'images')).some((r) => r.labels.boxes.some((b) => b.question === 'Where is the house?' && b.label === 'house'))).toBe(true);

    await page.reload();
    // The labeler reopens on the same image with the box and question.
    await page.getByTestId('labeler').waitFor({ timeout: 15_000 });
    expect(await page.getByTestId('labeler-name').textContent()).toBe('b.png');
    expect(await page.getByTestId('box-question').inputValue()).toBe('Where is the house?');
    expect(await page.getByTestId('box-label').inputValue()).toBe('house');
    expect(await page.getByTestId('box-coords').textContent()).toBe(coords);
    await page.getByTestId('labeler-back').click();
    await expect.poll(() => page.getByTestId('thumb').count()).toBe(3);
    expect(await page.getByTestId('box-count').allTextContents()).toEqual(['0 boxes', '1 box', '0 boxes']);
    // Filters.
    await page.getByTestId('filter-labelled').click();
    expect(await page.getByTestId('thumb').count()).toBe(1);
    await page.getByTestId('filter-unlabelled').click();
    expect(await page.getByTestId('thumb').count()).toBe(2);
    await page.getByTestId('filter-all').click();
    expect(errors).toEqual([]);
    await page.close();
  });

  it('imports a JSONL with two malformed lines: both line numbers reported, the rest imported', async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url + '#dataset');
    await newDataset(page);
    const lines = [
      { messages: [{ role: 'user', content: '<image>Find the sun.' }, { role: 'assistant', content: '{"bbox_2d": [10, 10, 60, 60], "label": "sun"}' }], images: ['imgs/p1.png'] },
      '{"messages": [{"role": "user", "content": "<image>broken"',
      { query: '<image>Find the house.', response: '[{"bbox_2d": [40, 100, 150, 190], "label": "house"}]', images: ['p2.png'] },
      'this is not json',
      { messages: [{ role: 'user', content: '<image>Locate the <ref-object>' }, { role: 'assistant', content: '<bbox>' }], images: ['p3.png'], objects: { ref: ['sun'], bbox: [[100, 20, 150, 70]] } },
    ].map((l) => (typeof l === 'string' ? l : JSON.stringify(l)));
    await page.getByTestId('import-button').click();
    await page.getByTestId('import-input').setInputFiles([
      { name: 'data.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(lines.join('\n') + '\n') },
      { name: 'p1.png', mimeType: 'image/png', buffer: scene(3) },
      { name: 'p2.png', mimeType: 'image/png', buffer: scene(4) },
      { name: 'p3.png', mimeType: 'image/png', buffer: scene(5) },
    ]);
    const notice = page.getByTestId('notice').filter({ hasText: 'problem' });
    await notice.waitFor({ timeout: 15_000 });
    const text = (await notice.textContent())!;
    expect(text).toMatch(/Added 3 images .*from 3 records — 2 problems/);
    expect(text).toMatch(/data\.jsonl line 2: invalid JSON/);
    expect(text).toMatch(/data\.jsonl line 4: invalid JSON/);
    await expect.poll(() => page.getByTestId('thumb').count()).toBe(3);
    expect(await page.getByTestId('box-count').allTextContents()).toEqual(['1 box', '1 box', '1 box']);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('reports non-images and corrupt images per file, downscales huge images with a notice', async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url + '#dataset');
    await newDataset(page);
    await dropFiles(page, '[data-testid="drop-zone"]', [
      { name: 'notes.pdf', bytes: Buffer.from('%PDF-1.4 not an image'), type: 'application/pdf' },
      { name: 'broken.png', bytes: Buffer.concat([scene(0).subarray(0, 40), Buffer.alloc(200, 7)]), type: 'image/png' },
      { name: 'tiny.png', bytes: png(4, 4, () => [0, 0, 0]), type: 'image/png' },
      { name: 'wide.png', bytes: png(5000, 40, (x) => [x % 256, 80, 160]), type: 'image/png' },
      pngFile('ok.png', 6),
    ]);
    const notice = page.getByTestId('notice').filter({ hasText: 'problem' });
    await notice.waitFor({ timeout: 20_000 });
    const text = (await notice.textContent())!;
    expect(text).toMatch(/Added 2 images/);
    expect(text).toMatch(/notes\.pdf: skipped, not an image/);
    expect(text).toMatch(/broken\.png: skipped, could not be decoded/);
    expect(text).toMatch(/tiny\.png: skipped, is 4×4/);
    expect(text).toMatch(/wide\.png: downscaled from 5000×40 to 4096×33/);
    await expect.poll(() => page.getByTestId('thumb').count()).toBe(2);
    expect(errors.filter((e) => !/Failed to load resource/.test(e))).toEqual([]);
    await page.close();
  });

  it('deletes images and datasets with undo', async () => {
    const page = await browser.context.newPage();
    await page.goto(server.url + '#dataset');
    await newDataset(page);
    await dropFiles(page, '[data-testid="drop-zone"]', [pngFile('d1.png', 1), pngFile('d2.png', 2)]);
    await expect.poll(() => page.getByTestId('thumb').count(), { timeout: 15_000 }).toBe(2);
    await page.getByTestId('thumb').first().hover();
    await page.getByTestId('thumb').first().locator('input[type=checkbox]').check();
    await page.getByTestId('delete-selected').click();
    await expect.poll(() => page.getByTestId('thumb').count()).toBe(1);
    await page.getByTestId('notice').filter({ hasText: 'Deleted "d1.png"' }).getByTestId('notice-undo').click();
    await expect.poll(() => page.getByTestId('thumb').count()).toBe(2);
    const n = await page.getByTestId('dataset-item').count();
    await page.locator('.ds-item.active').getByTestId('delete-dataset').click();
    await expect.poll(() => page.getByTestId('dataset-item').count()).toBe(n - 1);
    await page.getByTestId('notice').filter({ hasText: 'Deleted dataset' }).getByTestId('notice-undo').click();
    await expect.poll(() => page.getByTestId('dataset-item').count()).toBe(n);
    await expect.poll(() => page.getByTestId('thumb').count()).toBe(2);
    await page.close();
  });

  it('a second tab on the same dataset opens it read-only (Web Locks) and takes over when the first closes', async () => {
    const a = await browser.context.newPage();
    await a.goto(server.url + '#dataset');
    await a.getByTestId('dataset-item').first().waitFor();
    const b = await browser.context.newPage();
    await b.goto(server.url + '#dataset');
    await b.getByTestId('readonly-banner').waitFor({ timeout: 10_000 });
    expect(await b.getByTestId('readonly-banner').textContent()).toMatch(/open in another tab/);
    expect(await b.getByTestId('add-images').isDisabled()).toBe(true);
    await a.close();
    await b.getByTestId('readonly-banner').waitFor({ state: 'detached', timeout: 10_000 });
    expect(await b.getByTestId('add-images').isDisabled()).toBe(false);
    await b.close();
  });
});

describe('more ways in and out', () => {
  it('paste from the clipboard, a folder picker (relative paths), rename', async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url + '#dataset');
    await newDataset(page);
    await page.evaluate((b64) => {
      const bin = atob(b64);
      const u8 = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
      const dt = new DataTransfer();
      dt.items.add(new File([u8], 'image.png', { type: 'image/png' }));
      document.body.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
    }, scene(7).toString('base64'));
    await expect.poll(() => page.getByTestId('thumb').count(), { timeout: 15_000 }).toBe(1);
    expect(await page.locator('.tile-name').first().textContent()).toMatch(/^pasted-\d{8}-\d{6}\.png$/);

    const dir = await mkdtemp(join(tmpdir(), 'pw-folder-'));
    await mkdir(join(dir, 'shots', 'day2'), { recursive: true });
    await writeFile(join(dir, 'shots', 'one.png'), scene(8));
    await writeFile(join(dir, 'shots', 'day2', 'two.png'), scene(9));
    await writeFile(join(dir, 'shots', 'README.txt'), 'not labels');
    await page.getByTestId('folder-input').setInputFiles(join(dir, 'shots'));
    await expect.poll(() => page.getByTestId('thumb').count(), { timeout: 15_000 }).toBe(3);
    const names = await page.locator('.tile-name').allTextContents();
    expect(names.slice(1).sort()).toEqual(['shots/day2/two.png', 'shots/one.png']);
    expect(await page.getByTestId('notice').filter({ hasText: 'Added 2' }).textContent()).toMatch(/README\.txt: skipped/);
    await rm(dir, { recursive: true, force: true });

    await page.locator('.ds-item.active button[aria-label^="Rename"]').click();
    await page.getByTestId('dataset-rename-input').fill('Holiday shots');
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator('.ds-item.active .ds-name').textContent()).toBe('Holiday shots');
    // Stored before the reload (a reload aborts IndexedDB transactions still in flight).
    await expect.poll(async () => (await storedRecords<{ name: string }>(page, 'datasets')).some((d) => d.name === 'Holiday shots')).toBe(true);
    await page.reload();
    await expect.poll(() => page.locator('.ds-item.active .ds-name').textContent(), { timeout: 10_000 }).toBe('Holiday shots');
    expect(errors).toEqual([]);
    await page.close();
  });

  it('exports a zip (images + ms-swift JSONL, boxes in the resized frame) that imports back', async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url + '#dataset');
    await newDataset(page);
    // 1000x500 images: smart_resize → 1008x504 with the default pixels.
    const coco = {
      images: [{ id: 1, file_name: 'wide.png', width: 1000, height: 500 }],
      annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [100, 50, 400, 200] }],
      categories: [{ id: 1, name: 'sun' }],
    };
    await page.getByTestId('import-button').click();
    await page.getByTestId('import-input').setInputFiles([
      { name: 'coco.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(coco)) },
      { name: 'wide.png', mimeType: 'image/png', buffer: scene(1, 1000, 500) },
    ]);
    await expect.poll(() => page.getByTestId('thumb').count(), { timeout: 15_000 }).toBe(1);
    await page.getByTestId('export-button').click();
    await page.getByTestId('export-format').selectOption('swift');
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-run').click()]);
    const zip = unzipSync(new Uint8Array(await readFile((await download.path())!)));
    expect(Object.keys(zip).sort()).toEqual(['data.jsonl', 'images/wide.png']);
    const rec = JSON.parse(strFromU8(zip['data.jsonl']).trim());
    expect(rec.images).toEqual(['images/wide.png']);
    expect(rec.messages[0]).toEqual({ role: 'user', content: '<image>Locate the sun in the image and output its bbox coordinates in JSON format.' });
    expect(rec.messages[1].content).toContain('{"bbox_2d": [101, 50, 504, 252], "label": "sun"}');

    // And back in, as a new dataset.
    await page.getByTestId('import-button').click();
    await page.locator('[data-testid="import-panel"] input[type=checkbox]').check();
    await page.getByTestId('import-input').setInputFiles([{ name: 'export.zip', mimeType: 'application/zip', buffer: Buffer.from(await readFile((await download.path())!)) }]);
    await page.getByTestId('notice').filter({ hasText: 'from 1 record' }).waitFor({ timeout: 15_000 });
    await page.getByTestId('thumb').first().locator('.tile-img').click();
    const c = (await page.getByTestId('box-coords').textContent())!.replace(/[[\]\s]/g, '').split(',').map(Number);
    // One resized pixel is 1000/1008 original pixels: the round trip is exact to that.
    [100, 50, 500, 250].forEach((v, i) => expect(Math.abs(c[i] - v)).toBeLessThanOrEqual(1));
    expect(errors).toEqual([]);
    await page.close();
  });
});

describe('task kinds', () => {
  it('VQA answers, DPO pairs and GRPO prompts are edited per image, persist, and export in their forms', async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url + '#dataset');
    await newDataset(page);
    await dropFiles(page, '[data-testid="drop-zone"]', [{ name: 'q.png', bytes: scene(2), type: 'image/png' }]);
    await expect.poll(() => page.getByTestId('thumb').count(), { timeout: 15_000 }).toBe(1);
    const kind = (name: string) => page.getByTestId('task-kind').getByRole('radio', { name }).click();

    await kind('VQA / caption');
    await page.getByTestId('thumb').first().locator('.tile-img').click();
    await page.getByTestId('field-question').fill('What is in the picture?');
    await page.getByTestId('field-answer').fill('A red house under the sun.');
    await page.getByTestId('labeler-back').click();
    expect(await page.getByTestId('filter-labelled').textContent()).toMatch(/1$/);

    await kind('DPO pairs');
    await page.getByTestId('thumb').first().locator('.tile-img').click();
    expect(await page.getByTestId('field-question').inputValue()).toBe('What is in the picture?');
    await page.getByTestId('field-chosen').fill('A red house under the sun.');
    await page.getByTestId('field-rejected').fill('A blue car.');
    await page.getByTestId('labeler-back').click();

    await kind('GRPO / PPO');
    await page.getByTestId('thumb').first().locator('.tile-img').click();
    await page.getByTestId('reward-select').selectOption('exact');
    await page.getByTestId('field-answer').fill('house');
    await expect.poll(async () => (await storedRecords<{ labels: { answer: string } }>(page, 'images')).some((r) => r.labels.answer === 'house')).toBe(true);
    await expect.poll(async () => (await storedRecords<{ reward: string }>(page, 'datasets')).some((d) => d.reward === 'exact')).toBe(true);
    await page.reload();
    await page.getByTestId('labeler').waitFor({ timeout: 15_000 });
    expect(await page.getByTestId('field-answer').inputValue()).toBe('house');
    expect(await page.getByTestId('reward-select').inputValue()).toBe('exact');
    await page.getByTestId('labeler-back').click();

    const exportJsonl = async (format: string) => {
      await page.getByTestId('export-button').click();
      await page.getByTestId('export-format').selectOption(format);
      await page.locator('[data-testid="export-panel"] input[type=checkbox]').uncheck();
      const [d] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-run').click()]);
      await page.getByTestId('export-button').click();
      return JSON.parse((await readFile((await d.path())!, 'utf8')).trim());
    };
    expect(await exportJsonl('trl')).toEqual({
      prompt: [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'What is in the picture?' }] }],
      images: ['images/q.png'], solution: 'house', reward: 'exact',
    });
    await kind('DPO pairs');
    expect(await exportJsonl('trl')).toMatchObject({ chosen: [{ role: 'assistant', content: [{ type: 'text', text: 'A red house under the sun.' }] }], rejected: [{ role: 'assistant', content: [{ type: 'text', text: 'A blue car.' }] }] });
    expect(await exportJsonl('swift')).toMatchObject({ messages: [{ role: 'user', content: '<image>What is in the picture?' }, { role: 'assistant', content: 'A red house under the sun.' }], rejected_response: 'A blue car.' });
    expect(errors).toEqual([]);
    await page.close();
  });
});

describe('storage limits', () => {
  it('quota exceeded: a clear message, and no image record without its blob', async () => {
    // A fresh origin (another port) whose quota is set before it stores anything.
    const own = await serveDist();
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    const cdp = await browser.context.newCDPSession(page);
    const origin = new URL(own.url).origin;
    // Room for about two of the noisy 600x600 PNGs below (~1.1 MB each).
    await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 2_600_000 });
    await page.goto(own.url + '#dataset');
    await page.getByTestId('drop-zone').waitFor();
    let seed = 1;
    const noise = () => png(600, 600, () => {
      seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
      return [seed & 255, (seed >> 8) & 255, (seed >> 16) & 255];
    });
    await dropFiles(page, '[data-testid="drop-zone"]', Array.from({ length: 5 }, (_, k) => ({ name: `big${k}.png`, bytes: noise(), type: 'image/png' })));
    const notice = page.getByTestId('notice').filter({ hasText: 'storage is full' });
    await notice.waitFor({ timeout: 20_000 });
    expect(await notice.textContent()).toMatch(/Browser storage is full: "big\d\.png" and the \d files after it were not added \(nothing was half-written\)/);
    const shown = await page.getByTestId('thumb').count();
    expect(shown).toBeGreaterThanOrEqual(1);
    expect(shown).toBeLessThan(5);
    // Every stored record has its blob, and vice versa.
    const counts = await page.evaluate(async () => {
      const db: IDBDatabase = await new Promise((ok, err) => {
        const r = indexedDB.open('patchwork-datasets');
        r.onsuccess = () => ok(r.result);
        r.onerror = () => err(r.error);
      });
      const count = (store: string) => new Promise<number>((ok, err) => {
        const r = db.transaction(store).objectStore(store).count();
        r.onsuccess = () => ok(r.result);
        r.onerror = () => err(r.error); // an error, not a hang until the test's timeout
      });
      const out = { images: await count('images'), blobs: await count('blobs') };
      db.close();
      return out;
    });
    expect(counts.images).toBe(counts.blobs);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin });
    expect(errors.filter((e) => !/quota|storage/i.test(e))).toEqual([]);
    await page.close();
    await own.close();
  });
});

describe('import: the box frame on every route, no duplicates, answers as written', () => {
  const spoonLine = JSON.stringify({ messages: [{ role: 'user', content: '<image>Where is the spoon?' }, { role: 'assistant', content: '{"bbox_2d": [325, 65, 425, 325]}' }], images: ['spoon.png'] });

  it('a JSONL dropped with its image on the grid is read in the frame chosen on the header; the answer keeps no invented label', async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url + '#dataset');
    await newDataset(page);
    // The choice is on the header (not only in the Import panel) and kept by the dataset.
    await page.getByTestId('answer-frame').selectOption('abs');
    await expect.poll(async () => (await storedRecords<{ answerFrame?: string }>(page, 'datasets')).some((d) => d.answerFrame === 'abs')).toBe(true);
    await dropFiles(page, '[data-testid="drop-zone"]', [
      { name: 'data.jsonl', bytes: Buffer.from(spoonLine + '\n'), type: '' },
      { name: 'spoon.png', bytes: scene(7, 700, 350), type: 'image/png' },
    ]);
    const notice = page.getByTestId('notice').filter({ hasText: 'from 1 record' });
    await notice.waitFor({ timeout: 15_000 });
    expect(await notice.textContent()).toMatch(/bbox_2d answers were read in original image pixels/);
    await page.getByTestId('thumb').first().locator('.tile-img').click();
    // Original pixels, not [332, 66, 434, 332] (what reading them as the resized frame gives).
    const c = (await page.getByTestId('box-coords').textContent())!.replace(/[[\]\s]/g, '').split(',').map(Number);
    expect(c).toEqual([325, 65, 425, 325]);
    expect(await page.getByTestId('box-label').inputValue()).toBe('');
    await page.getByTestId('labeler-back').click();

    // Exported for training: the resized frame (700x350 → 700x336), and still no label.
    await page.getByTestId('export-button').click();
    await page.getByTestId('export-format').selectOption('swift');
    await page.locator('[data-testid="export-panel"] input[type=checkbox]').uncheck();
    const [d] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-run').click()]);
    const rec = JSON.parse((await readFile((await d.path())!, 'utf8')).trim());
    expect(rec.messages[0].content).toBe('<image>Where is the spoon?');
    expect(rec.messages[1].content).toContain('{"bbox_2d": [325, 62, 425, 312]}');
    expect(rec.messages[1].content).not.toContain('label');

    // After a reload the dataset still reads imports in original pixels.
    await page.reload();
    await page.getByTestId('answer-frame').waitFor({ timeout: 15_000 });
    expect(await page.getByTestId('answer-frame').inputValue()).toBe('abs');
    expect(errors).toEqual([]);
    await page.close();
  });

  it('importing the same JSONL and images again adds nothing; a JSONL alone labels images already in the dataset; paths out of the folder are refused', async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url + '#dataset');
    await newDataset(page);
    const line = (img: string, b: number[]) => JSON.stringify({ messages: [{ role: 'user', content: '<image>Find the sun.' }, { role: 'assistant', content: `{"bbox_2d": [${b.join(', ')}], "label": "sun"}` }], images: [img] });
    const files = [
      { name: 'data.jsonl', bytes: Buffer.from([line('imgs/a.png', [10, 10, 60, 60]), line('imgs/b.png', [20, 20, 80, 80])].join('\n') + '\n'), type: '' },
      { name: 'a.png', bytes: scene(8), type: 'image/png' },
      { name: 'b.png', bytes: scene(9), type: 'image/png' },
    ];
    await dropFiles(page, '[data-testid="drop-zone"]', files);
    await expect.poll(() => page.getByTestId('thumb').count(), { timeout: 15_000 }).toBe(2);
    expect(await page.getByTestId('box-count').allTextContents()).toEqual(['1 box', '1 box']);
    await page.waitForFunction(() => !document.querySelector('[data-testid="progress"]'));

    // The same drop again, and a.png under another name: matched by content, nothing duplicated.
    await dropFiles(page, '[data-testid="drop-zone"]', [...files, { name: 'copy-of-a.png', bytes: scene(8), type: 'image/png' }]);
    const again = page.getByTestId('notice').filter({ hasText: 'Added 0 images' });
    await again.waitFor({ timeout: 15_000 });
    expect(await again.textContent()).toMatch(/3 images were already in the dataset \(same content\) and not added again/);
    expect(await page.getByTestId('thumb').count()).toBe(2);
    expect(await page.getByTestId('box-count').allTextContents()).toEqual(['1 box', '1 box']);
    const newest = (await storedRecords<{ id: string; createdAt: number }>(page, 'datasets')).sort((x, y) => y.createdAt - x.createdAt)[0].id;
    expect((await storedRecords<{ datasetId: string; name: string }>(page, 'images')).filter((r) => r.datasetId === newest).map((r) => r.name).sort()).toEqual(['a.png', 'b.png']);
    await page.waitForFunction(() => !document.querySelector('[data-testid="progress"]'));

    // A JSONL alone: its line for a.png labels the stored image; the one climbing out is refused.
    await dropFiles(page, '[data-testid="drop-zone"]', [{
      name: 'more.jsonl', type: '',
      bytes: Buffer.from([line('a.png', [100, 100, 200, 200]), line('../b.png', [1, 1, 50, 50])].join('\n') + '\n'),
    }]);
    const more = page.getByTestId('notice').filter({ hasText: 'Labels added to 1 image already in the dataset' });
    await more.waitFor({ timeout: 15_000 });
    expect(await more.textContent()).toMatch(/more\.jsonl line 2: image path "\.\.\/b\.png" is refused: "\.\." leads above the dataset folder/);
    expect(await page.getByTestId('thumb').count()).toBe(2);
    expect(await page.getByTestId('box-count').allTextContents()).toEqual(['2 boxes', '1 box']);

    // Exported for training: b.png's answer exactly as it was written; a.png's (two boxes now) written afresh.
    await page.getByTestId('export-button').click();
    await page.getByTestId('export-format').selectOption('swift');
    await page.locator('[data-testid="export-panel"] input[type=checkbox]').uncheck();
    const [d] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-run').click()]);
    const recs = (await readFile((await d.path())!, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(recs.find((r) => r.images[0] === 'images/b.png').messages[1].content).toBe('{"bbox_2d": [20, 20, 80, 80], "label": "sun"}');
    expect(recs.find((r) => r.images[0] === 'images/a.png').messages[1].content).toMatch(/^```json\n\[\n\t\{"bbox_2d": \[10, 10, 60, 60\], "label": "sun"\},\n\t\{"bbox_2d": \[\d+, \d+, \d+, \d+\], "label": "sun"\}\n\]\n```$/);
    expect(errors).toEqual([]);
    await page.close();
  });
});

describe('image files: EXIF orientation and pixel limit', () => {
  /** A w x h JPEG, red left half and blue right half, with an EXIF orientation segment spliced in. */
  const orientedJpeg = (w: number, h: number, orientation: number): Buffer => {
    const data = Buffer.alloc(w * h * 4);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data.set(x < w / 2 ? [230, 20, 20, 255] : [20, 20, 230, 255], (y * w + x) * 4);
    const enc = jpeg.encode({ data, width: w, height: h }, 95).data;
    const tiff = Buffer.alloc(26);
    tiff.write('MM', 0, 'ascii');
    tiff.writeUInt16BE(42, 2);
    tiff.writeUInt32BE(8, 4);
    tiff.writeUInt16BE(1, 8);
    tiff.writeUInt16BE(0x0112, 10);
    tiff.writeUInt16BE(3, 12);
    tiff.writeUInt32BE(1, 14);
    tiff.writeUInt16BE(orientation, 18);
    const body = Buffer.concat([Buffer.from('Exif\0\0', 'binary'), tiff]);
    const app1 = Buffer.alloc(4);
    app1.writeUInt16BE(0xffe1, 0);
    app1.writeUInt16BE(body.length + 2, 2);
    return Buffer.concat([enc.subarray(0, 2), app1, body, enc.subarray(2)]);
  };
  /** A PNG whose header claims w x h (with one tiny IDAT): only a header check stops it. */
  const bombPng = (w: number, h: number): Buffer => {
    const chunk = (type: string, d: Buffer) => {
      const out = Buffer.alloc(12 + d.length);
      out.writeUInt32BE(d.length, 0);
      out.write(type, 4, 'ascii');
      d.copy(out, 8);
      out.writeUInt32BE(crc32(out.subarray(4, 8 + d.length)), 8 + d.length);
      return out;
    };
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(w, 0);
    ihdr.writeUInt32BE(h, 4);
    ihdr[8] = 8;
    ihdr[9] = 2;
    return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', Buffer.from([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])), chunk('IEND', Buffer.alloc(0))]);
  };

  it('a JPEG with EXIF orientation 6 is stored upright (as PIL exif_transpose), its JSONL box in the oriented frame; a bomb header is refused with the numbers', async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url + '#dataset');
    await newDataset(page);
    await page.getByTestId('answer-frame').selectOption('abs');
    // 64x32 stored, orientation 6 (90° clockwise) → 32x64 upright; the box covers the top (red) half.
    const line = JSON.stringify({ messages: [{ role: 'user', content: '<image>Where is the red part?' }, { role: 'assistant', content: '{"bbox_2d": [0, 0, 32, 32], "label": "red"}' }], images: ['photo.jpg'] });
    await dropFiles(page, '[data-testid="drop-zone"]', [
      { name: 'data.jsonl', bytes: Buffer.from(line + '\n'), type: '' },
      { name: 'photo.jpg', bytes: orientedJpeg(64, 32, 6), type: 'image/jpeg' },
      { name: 'bomb.png', bytes: bombPng(40000, 40000), type: 'image/png' },
    ]);
    const notice = page.getByTestId('notice').filter({ hasText: 'problem' });
    await notice.waitFor({ timeout: 15_000 });
    const text = (await notice.textContent())!;
    expect(text).toMatch(/Added 1 image/);
    expect(text).toContain("bomb.png: skipped, is 40000×40000 = 1.60e9 pixels, over twice the limit of 89,478,485 pixels (like PIL's MAX_IMAGE_PIXELS = 89,478,485, which refuses above 178,956,970): refused as a possible decompression bomb; resize it");
    expect(text).toMatch(/photo\.jpg: EXIF orientation 6 applied \(stored upright, 32×64\)/);
    type Rec = { name: string; width: number; height: number; labels: { boxes: { x1: number; y1: number; x2: number; y2: number }[] } };
    const rec = (await storedRecords<Rec>(page, 'images')).find((r) => r.name === 'photo.jpg')!;
    expect([rec.width, rec.height]).toEqual([32, 64]);
    expect(rec.labels.boxes.map((b) => [b.x1, b.y1, b.x2, b.y2])).toEqual([[0, 0, 32, 32]]);
    // The stored blob decodes upright even without EXIF handling: red at the top, blue at the bottom.
    const px = await page.evaluate(async (id) => {
      const db: IDBDatabase = await new Promise((ok, err) => {
        const r = indexedDB.open('patchwork-datasets');
        r.onsuccess = () => ok(r.result);
        r.onerror = () => err(r.error);
      });
      const blobs = await new Promise<{ image: Blob }>((ok) => {
        const r = db.transaction('blobs').objectStore('blobs').get(id);
        r.onsuccess = () => ok(r.result);
      });
      db.close();
      const bmp = await createImageBitmap(blobs.image, { imageOrientation: 'none' });
      const c = new OffscreenCanvas(bmp.width, bmp.height);
      const g = c.getContext('2d')!;
      g.drawImage(bmp, 0, 0);
      return { w: bmp.width, h: bmp.height, top: Array.from(g.getImageData(16, 8, 1, 1).data), bottom: Array.from(g.getImageData(16, 56, 1, 1).data) };
    }, (await storedRecords<{ id: string; name: string }>(page, 'images')).find((r) => r.name === 'photo.jpg')!.id);
    expect([px.w, px.h]).toEqual([32, 64]);
    expect(px.top[0]).toBeGreaterThan(180);
    expect(px.bottom[2]).toBeGreaterThan(180);
    expect(errors).toEqual([]);
    await page.close();
  });
});
