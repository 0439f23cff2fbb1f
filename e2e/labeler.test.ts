// The labeler in the built app: keyboard labelling (draw, nudge, undo/redo, delete, classes,
// repeat, navigation, zoom that stays), and the README screenshots of both screens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { launch, ROOT, serveDist, watchErrors, type Browser, type StaticServer } from './harness.ts';
import { dragBox, dropFiles, imagePoint, newDataset, scene, storedRecords } from './datasetUtil.ts';

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

async function coords(page: Page, row = 0): Promise<number[]> {
  const t = await page.getByTestId('box-coords').nth(row).textContent();
  return t!.replace(/[[\]\s]/g, '').split(',').map(Number);
}
const plus = (c: number[], dx: number, dy: number) => [c[0] + dx, c[1] + dy, c[2] + dx, c[3] + dy];

describe('labeler', () => {
  it('keyboard labelling: a box drawn, nudged, undone and redone by shortcuts ends where expected', async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url + '#dataset');
    await page.getByTestId('drop-zone').waitFor();
    await dropFiles(page, '[data-testid="drop-zone"]', [0, 1].map((k) => ({ name: `k${k}.png`, bytes: scene(k), type: 'image/png' })));
    await expect.poll(() => page.getByTestId('thumb').count(), { timeout: 15_000 }).toBe(2);
    await page.getByTestId('thumb').first().locator('.tile-img').click();
    await page.locator('.stage-img').waitFor();

    // Classes, then "2" picks house for new boxes.
    await page.getByTestId('class-input').fill('sun, house');
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator('.class-chip').count()).toBe(2);
    await page.locator('.stage').click({ position: { x: 5, y: 5 } }); // focus back on the image
    await page.keyboard.press('2');

    await dragBox(page, await imagePoint(page, 40, 100, 320, 240), await imagePoint(page, 130, 190, 320, 240));
    await expect.poll(() => page.getByTestId('box-row').count()).toBe(1);
    expect(await page.getByTestId('box-label').inputValue()).toBe('house');
    const c0 = await coords(page);

    // A zero-area click draws nothing; a 1 px drag is refused.
    const p = await imagePoint(page, 250, 40, 320, 240);
    await page.mouse.click(p.x, p.y);
    expect(await page.getByTestId('box-row').count()).toBe(1);

    // Click the box to select it again, nudge by arrows.
    const mid = await imagePoint(page, 80, 150, 320, 240);
    await page.mouse.click(mid.x, mid.y);
    await expect.poll(() => page.locator('.box-row.selected').count()).toBe(1);
    for (let i = 0; i < 3; i++) await page.keyboard.press('ArrowRight');
    await page.keyboard.press('Shift+ArrowDown');
    expect(await coords(page)).toEqual(plus(c0, 3, 10));
    await page.keyboard.press('Control+z');
    expect(await coords(page)).toEqual(plus(c0, 3, 0));
    await page.keyboard.press('Control+z');
    expect(await coords(page)).toEqual(plus(c0, 2, 0));
    await page.keyboard.press('Control+Shift+Z');
    expect(await coords(page)).toEqual(plus(c0, 3, 0));
    await page.keyboard.press('Control+y');
    expect(await coords(page)).toEqual(plus(c0, 3, 10));

    // Delete and undo; number keys relabel the selected box.
    await page.keyboard.press('Delete');
    expect(await page.getByTestId('box-row').count()).toBe(0);
    await page.keyboard.press('Control+z');
    expect(await coords(page)).toEqual(plus(c0, 3, 10));
    await page.getByTestId('box-row').first().click({ position: { x: 4, y: 4 } });
    await page.locator('.stage').click({ position: { x: 5, y: 5 } }); // deselects (click on empty canvas)
    expect(await page.locator('.box-row.selected').count()).toBe(0);
    await page.keyboard.press('Tab');
    await page.keyboard.press('1');
    expect(await page.getByTestId('box-label').inputValue()).toBe('sun');

    // Zoom with the wheel; it stays on the next image (D); R repeats the previous image's boxes.
    const stage = await page.locator('.stage').boundingBox();
    await page.mouse.move(stage!.x + stage!.width / 2, stage!.y + stage!.height / 2);
    await page.mouse.wheel(0, -300);
    const zoom = await page.getByTestId('zoom-level').textContent();
    expect(zoom).not.toBe('Fit');
    await page.keyboard.press('Escape'); // deselect
    await page.keyboard.press('d');
    await expect.poll(() => page.getByTestId('labeler-index').textContent()).toBe('2 / 2');
    expect(await page.getByTestId('zoom-level').textContent()).toBe(zoom);
    expect(await page.getByTestId('box-row').count()).toBe(0);
    await page.keyboard.press('r');
    await expect.poll(() => page.getByTestId('box-row').count()).toBe(1);
    expect(await coords(page)).toEqual(plus(c0, 3, 10));
    await page.keyboard.press('Control+z');
    expect(await page.getByTestId('box-row').count()).toBe(0);
    await page.keyboard.press('0'); // fit
    await page.keyboard.press('a');
    await expect.poll(() => page.getByTestId('labeler-index').textContent()).toBe('1 / 2');

    type Rec = { labels: { boxes: { label: string }[] } };
    await expect.poll(async () => (await storedRecords<Rec>(page, 'images')).some((r) => r.labels.boxes.some((b) => b.label === 'sun'))).toBe(true);
    await page.reload();
    await page.getByTestId('labeler').waitFor({ timeout: 15_000 });
    const c1 = await coords(page);
    expect(c1).toEqual(plus(c0, 3, 10));
    expect(await page.getByTestId('box-label').inputValue()).toBe('sun');

    // Mouse: select, drag to move, drag the bottom-right handle to resize; undo both.
    await page.locator('.stage-img').waitFor();
    const centre = await imagePoint(page, (c1[0] + c1[2]) / 2, (c1[1] + c1[3]) / 2, 320, 240);
    await page.mouse.click(centre.x, centre.y);
    await dragBox(page, centre, await imagePoint(page, (c1[0] + c1[2]) / 2 - 20, (c1[1] + c1[3]) / 2 - 30, 320, 240));
    const c2 = await coords(page);
    expect(Math.abs(c2[0] - (c1[0] - 20))).toBeLessThanOrEqual(1);
    expect(Math.abs(c2[1] - (c1[1] - 30))).toBeLessThanOrEqual(1);
    expect([c2[2] - c2[0], c2[3] - c2[1]]).toEqual([c1[2] - c1[0], c1[3] - c1[1]]); // same size
    await dragBox(page, await imagePoint(page, c2[2], c2[3], 320, 240), await imagePoint(page, c2[2] + 15, c2[3] + 8, 320, 240));
    const c3 = await coords(page);
    expect([c3[0], c3[1]]).toEqual([c2[0], c2[1]]);
    expect(Math.abs(c3[2] - (c2[2] + 15))).toBeLessThanOrEqual(1);
    expect(Math.abs(c3[3] - (c2[3] + 8))).toBeLessThanOrEqual(1);
    await page.keyboard.press('Control+z');
    expect(await coords(page)).toEqual(c2);
    await page.keyboard.press('Control+z');
    expect(await coords(page)).toEqual(c1);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('screenshots of the Dataset and Labeler screens', async () => {
    const page = await browser.context.newPage();
    await page.goto(server.url + '#dataset');
    await newDataset(page);
    // A COCO-labelled set: sun and house boxes from the scene generator, a few left unlabelled.
    const n = 12;
    const images = Array.from({ length: n }, (_, k) => ({ id: k + 1, file_name: `street_${String(k + 1).padStart(2, '0')}.png`, width: 320, height: 240 }));
    const annotations: unknown[] = [];
    for (let k = 0; k < n - 3; k++) {
      const sunX = 60 + ((k * 53) % 200);
      const houseX = 40 + ((k * 97) % 180);
      annotations.push({ id: annotations.length + 1, image_id: k + 1, category_id: 1, bbox: [sunX - 24, 26, 48, 48] });
      annotations.push({ id: annotations.length + 1, image_id: k + 1, category_id: 2, bbox: [houseX - 2, 88, 94, 104] });
    }
    const coco = { images, annotations, categories: [{ id: 1, name: 'sun' }, { id: 2, name: 'house' }] };
    await page.getByTestId('import-button').click();
    await page.getByTestId('import-input').setInputFiles([
      { name: 'annotations.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(coco)) },
      ...images.map((im, k) => ({ name: im.file_name, mimeType: 'image/png', buffer: scene(k) })),
    ]);
    await expect.poll(() => page.getByTestId('thumb').count(), { timeout: 20_000 }).toBe(n);
    await page.getByTestId('dataset-name').fill('Street scenes');
    await page.getByTestId('dataset-name').press('Enter');
    // Let thumbnails load and notices fade.
    await page.waitForTimeout(600);
    for (const b of await page.locator('.notice-close').all()) await b.click().catch(() => undefined);
    await page.mouse.move(0, 0);
    await mkdir(join(ROOT, 'docs/screenshots'), { recursive: true });
    await page.screenshot({ path: join(ROOT, 'docs/screenshots/dataset.png') });

    await page.getByTestId('thumb').nth(2).locator('.tile-img').click();
    await page.locator('.stage-img').waitFor();
    await page.waitForTimeout(200);
    const pt = await imagePoint(page, 100, 160, 320, 240);
    await page.mouse.click(pt.x, pt.y); // select the house
    await page.getByTestId('box-question').nth(1).fill('Where is the red house?');
    await page.locator('.preview summary').click(); // show the bbox_2d the model is trained on
    const sun = await imagePoint(page, 230, 120, 320, 240);
    await page.mouse.move(sun.x, sun.y);
    await page.screenshot({ path: join(ROOT, 'docs/screenshots/labeler.png') });
    await page.close();
  });
});
