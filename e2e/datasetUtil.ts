// Helpers for the dataset/labeler e2e tests: real PNG bytes made in Node, handed to the page.
import { deflateSync } from 'node:zlib';
import type { Page } from 'playwright-core';
import { crc32 } from '../src/base/crc32.ts';

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  Buffer.from(data).copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** An RGB PNG of w x h whose pixel colour comes from `px(x, y)`. */
export function png(w: number, h: number, px: (x: number, y: number) => [number, number, number]): Buffer {
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) {
    raw[y * (w * 3 + 1)] = 0;
    for (let x = 0; x < w; x++) {
      const [r, g, b] = px(x, y);
      const o = y * (w * 3 + 1) + 1 + x * 3;
      raw[o] = r;
      raw[o + 1] = g;
      raw[o + 2] = b;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', new Uint8Array())]);
}

/** A little scene: sky, ground, a sun and a house, varied by `k` — looks like a real photo set in screenshots. */
export function scene(k: number, w = 320, h = 240): Buffer {
  const sunX = 60 + ((k * 53) % (w - 120));
  const houseX = 40 + ((k * 97) % (w - 140));
  const sky: [number, number, number] = [[135, 185, 235], [250, 190, 140], [120, 160, 210], [200, 215, 235]][k % 4] as [number, number, number];
  return png(w, h, (x, y) => {
    if ((x - sunX) ** 2 + (y - 50) ** 2 < 22 ** 2) return [250, 205, 60];
    if (x >= houseX && x < houseX + 90 && y >= 120 && y < 190) return x > houseX + 35 && x < houseX + 55 && y > 150 ? [110, 70, 40] : [200, 90, 70];
    if (y >= houseX * 0 + 90 && y < 120 && Math.abs(x - (houseX + 45)) < (y - 88) * 1.5) return [120, 50, 50];
    if (y >= 170) return [70 + (x % 7), 150 - ((y * 3) % 20), 70];
    const t = y / h;
    return [Math.round(sky[0] * (1 - t * 0.3)), Math.round(sky[1] * (1 - t * 0.2)), sky[2]];
  });
}

/** Drops files on `selector` the way a browser does: a synthetic drop with a DataTransfer made in the page. */
export async function dropFiles(page: Page, selector: string, files: { name: string; bytes: Buffer; type: string }[]): Promise<void> {
  await page.evaluate(
    ({ selector, files }) => {
      const dt = new DataTransfer();
      for (const f of files) {
        const bin = atob(f.b64);
        const u8 = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
        dt.items.add(new File([u8], f.name, { type: f.type }));
      }
      const el = document.querySelector(selector);
      if (!el) throw new Error(`no ${selector}`);
      el.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dt, bubbles: true, cancelable: true }));
      el.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
      el.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    },
    { selector, files: files.map((f) => ({ name: f.name, type: f.type, b64: f.bytes.toString('base64') })) },
  );
}

/** Screen point of image pixel (x, y) in the labeler (reads the <img> placement). */
export async function imagePoint(page: Page, x: number, y: number, imageW: number, imageH: number): Promise<{ x: number; y: number }> {
  const bb = await page.locator('.stage-img').boundingBox();
  if (!bb) throw new Error('labeler image not shown');
  return { x: bb.x + (x / imageW) * bb.width, y: bb.y + (y / imageH) * bb.height };
}

export async function dragBox(page: Page, a: { x: number; y: number }, b: { x: number; y: number }): Promise<void> {
  await page.mouse.move(a.x, a.y);
  await page.mouse.down();
  await page.mouse.move((a.x + b.x) / 2, (a.y + b.y) / 2, { steps: 4 });
  await page.mouse.move(b.x, b.y, { steps: 4 });
  await page.mouse.up();
}

/** Clicks "+ New" and waits until the new, empty dataset is the open one (its lock taken, its grid empty). */
export async function newDataset(page: Page): Promise<void> {
  await page.locator('[data-testid="dataset-screen"][data-ready="true"]').waitFor();
  await page.waitForFunction(() => !document.querySelector('[data-testid="progress"]'));
  const before = await page.getByTestId('dataset-item').count();
  await page.getByTestId('new-dataset').click();
  await page.waitForFunction(
    (n) => {
      const items = document.querySelectorAll('[data-testid="dataset-item"]');
      return items.length === n + 1 && items[items.length - 1].classList.contains('active') && !!document.querySelector('.drop-zone.empty') && !document.querySelector('[data-testid="thumb"]');
    },
    before,
  );
}

/** Every record of one object store of the app's IndexedDB (to check what really reached the disk). */
export async function storedRecords<T = Record<string, unknown>>(page: Page, store: 'datasets' | 'images'): Promise<T[]> {
  return page.evaluate(async (store) => {
    const db: IDBDatabase = await new Promise((ok, err) => {
      const r = indexedDB.open('patchwork-datasets');
      r.onsuccess = () => ok(r.result);
      r.onerror = () => err(r.error);
    });
    const all = await new Promise<unknown[]>((ok) => {
      const r = db.transaction(store).objectStore(store).getAll();
      r.onsuccess = () => ok(r.result);
    });
    db.close();
    return all as never;
  }, store) as Promise<T[]>;
}
