// Image files made byte by byte in the test: PNG (every colour type, 16-bit, palette, Adam7,
// eXIf), JPEG (jpeg-js's encoder, an EXIF APP1 segment spliced in), truncated and corrupt files,
// headers claiming huge sizes. Orientation results are PIL's (scripts/exif_transpose_reference.py).
import { deflateSync } from 'node:zlib';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { describe, expect, it } from 'vitest';
import { checkPixelLimit, decodeImageFile, exifTranspose, ImageError, MAX_IMAGE_PIXELS, readImageHeader } from './image.ts';
import { crc32 } from '../base/crc32.ts';

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  Buffer.from(data).copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}
const SIG = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);
function ihdr(w: number, h: number, depth = 8, ctype = 2, interlace = 0): Buffer {
  const d = Buffer.alloc(13);
  d.writeUInt32BE(w, 0);
  d.writeUInt32BE(h, 4);
  d[8] = depth;
  d[9] = ctype;
  d[12] = interlace;
  return chunk('IHDR', d);
}
/** EXIF (TIFF) bytes holding only the orientation tag. */
function exifTiff(orientation: number, le = false): Buffer {
  const b = Buffer.alloc(26);
  const w16 = (v: number, o: number) => (le ? b.writeUInt16LE(v, o) : b.writeUInt16BE(v, o));
  const w32 = (v: number, o: number) => (le ? b.writeUInt32LE(v, o) : b.writeUInt32BE(v, o));
  b.write(le ? 'II' : 'MM', 0, 'ascii');
  w16(42, 2);
  w32(8, 4);
  w16(1, 8);
  w16(0x0112, 10);
  w16(3, 12);
  w32(1, 14);
  w16(orientation, 18);
  w32(0, 22);
  return b;
}
/** An 8-bit grey PNG whose pixel (x, y) is px(x, y), optionally with an eXIf chunk. */
function greyPng(w: number, h: number, px: (x: number, y: number) => number, orientation?: number): Buffer {
  const raw = Buffer.alloc((w + 1) * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw[y * (w + 1) + 1 + x] = px(x, y);
  const parts = [SIG, ihdr(w, h, 8, 0)];
  if (orientation !== undefined) parts.push(chunk('eXIf', exifTiff(orientation)));
  parts.push(chunk('IDAT', deflateSync(raw)), chunk('IEND', new Uint8Array()));
  return Buffer.concat(parts);
}
function rgbPng(w: number, h: number, px: (x: number, y: number) => [number, number, number]): Buffer {
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw.set(px(x, y), y * (w * 3 + 1) + 1 + x * 3);
  return Buffer.concat([SIG, ihdr(w, h), chunk('IDAT', deflateSync(raw)), chunk('IEND', new Uint8Array())]);
}
/** A JPEG of w x h (red left half, blue right half) with an EXIF APP1 segment spliced after SOI. */
function jpegWithExif(w: number, h: number, orientation?: number, le = false): Buffer {
  const data = Buffer.alloc(w * h * 4);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data.set(x < w / 2 ? [230, 20, 20, 255] : [20, 20, 230, 255], (y * w + x) * 4);
  const enc = jpeg.encode({ data, width: w, height: h }, 95).data;
  if (orientation === undefined) return enc;
  const body = Buffer.concat([Buffer.from('Exif\0\0', 'binary'), exifTiff(orientation, le)]);
  const app1 = Buffer.alloc(4);
  app1.writeUInt16BE(0xffe1, 0);
  app1.writeUInt16BE(body.length + 2, 2);
  return Buffer.concat([enc.subarray(0, 2), app1, body, enc.subarray(2)]);
}
const err = (f: () => unknown): ImageError => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ImageError);
    return e as ImageError;
  }
  throw new Error('expected an ImageError');
};

// PIL: ImageOps.exif_transpose of the 3x2 image with value y*3+x (scripts/exif_transpose_reference.py).
const PIL_TRANSPOSE: [number, [number, number], number[]][] = [
  [1, [3, 2], [0, 1, 2, 3, 4, 5]],
  [2, [3, 2], [2, 1, 0, 5, 4, 3]],
  [3, [3, 2], [5, 4, 3, 2, 1, 0]],
  [4, [3, 2], [3, 4, 5, 0, 1, 2]],
  [5, [2, 3], [0, 3, 1, 4, 2, 5]],
  [6, [2, 3], [3, 0, 4, 1, 5, 2]],
  [7, [2, 3], [5, 2, 4, 1, 3, 0]],
  [8, [2, 3], [2, 5, 1, 4, 0, 3]],
];

describe('readImageHeader', () => {
  it('reads PNG, JPEG, GIF, WebP and BMP sizes without decoding', () => {
    expect(readImageHeader(rgbPng(37, 23, () => [1, 2, 3]), 'a.png')).toMatchObject({ format: 'png', width: 37, height: 23, orientation: 1 });
    expect(readImageHeader(jpegWithExif(40, 24), 'a.jpg')).toMatchObject({ format: 'jpeg', width: 40, height: 24, orientation: 1 });
    const gif = Buffer.from('GIF89a\x20\x01\x10\x00', 'binary');
    expect(readImageHeader(gif, 'a.gif')).toMatchObject({ format: 'gif', width: 288, height: 16 });
    // WebP lossless (VP8L): signature 0x2f then 14-bit width-1, height-1.
    const vp8l = Buffer.alloc(30);
    vp8l.write('RIFF', 0, 'ascii');
    vp8l.writeUInt32LE(22, 4);
    vp8l.write('WEBPVP8L', 8, 'ascii');
    vp8l.writeUInt32LE(10, 16);
    vp8l[20] = 0x2f;
    vp8l.writeUInt32LE((99 & 0x3fff) | ((49 & 0x3fff) << 14), 21);
    expect(readImageHeader(vp8l, 'a.webp')).toMatchObject({ format: 'webp', width: 100, height: 50 });
    const bmp = Buffer.alloc(54);
    bmp.write('BM', 0, 'ascii');
    bmp.writeInt32LE(64, 18);
    bmp.writeInt32LE(-32, 22); // top-down
    expect(readImageHeader(bmp, 'a.bmp')).toMatchObject({ format: 'bmp', width: 64, height: 32 });
  });

  it('reads the EXIF orientation of a JPEG (both byte orders) and of a PNG eXIf chunk; 5-8 swap the sides', () => {
    expect(readImageHeader(jpegWithExif(40, 24, 6), 'p.jpg')).toMatchObject({ width: 24, height: 40, orientation: 6, storedWidth: 40, storedHeight: 24 });
    expect(readImageHeader(jpegWithExif(40, 24, 3, true), 'p.jpg')).toMatchObject({ width: 40, height: 24, orientation: 3 });
    expect(readImageHeader(greyPng(3, 2, () => 0, 8), 'p.png')).toMatchObject({ width: 2, height: 3, orientation: 8 });
  });

  it('names the file and the reason: empty, not an image, truncated PNG/JPEG header, JPEG without SOF', () => {
    expect(err(() => readImageHeader(new Uint8Array(), 'empty.png')).message).toBe('empty.png: the file is empty');
    expect(err(() => readImageHeader(Buffer.from('%PDF-1.4 hello'), 'notes.png')).message).toBe('notes.png: not a PNG, JPEG, WebP, GIF, BMP, AVIF or ICO image (unrecognised first bytes)');
    const png = rgbPng(20, 20, () => [0, 0, 0]);
    const e1 = err(() => readImageHeader(png.subarray(0, 20), 'cut.png'));
    expect(e1.file).toBe('cut.png');
    expect(e1.message).toBe('cut.png: truncated PNG header (20 bytes); the file is incomplete, export or download it again');
    const jpg = jpegWithExif(16, 16, 6);
    expect(err(() => readImageHeader(jpg.subarray(0, 30), 'cut.jpg')).message).toMatch(/^cut\.jpg: truncated JPEG header: it ends before the frame size \(SOF\)/);
    const noSof = Buffer.from([0xff, 0xd8, 0xff, 0xda, 0x00, 0x02, 0xff, 0xd9]);
    expect(err(() => readImageHeader(noSof, 'nosof.jpg')).message).toBe('nosof.jpg: corrupt JPEG: no frame size (SOF) before the image data');
  });
});

describe('pixel limit (PIL: warn above MAX_IMAGE_PIXELS, refuse above twice)', () => {
  it("uses PIL's MAX_IMAGE_PIXELS", () => {
    expect(MAX_IMAGE_PIXELS).toBe(89_478_485);
  });

  it('refuses a header claiming 40000×40000 before decoding anything, with the numbers', () => {
    // IHDR only: no image data at all, so anything but the header check would fail differently.
    const bomb = Buffer.concat([SIG, ihdr(40000, 40000), chunk('IEND', new Uint8Array())]);
    const e = err(() => decodeImageFile(bomb, 'x.png'));
    expect(e.file).toBe('x.png');
    expect(e.message).toBe("x.png: is 40000×40000 = 1.60e9 pixels, over twice the limit of 89,478,485 pixels (like PIL's MAX_IMAGE_PIXELS = 89,478,485, which refuses above 178,956,970): refused as a possible decompression bomb; resize it");
  });

  it('warns between the limit and twice it, and still decodes', () => {
    const warnings: string[] = [];
    const img = decodeImageFile(rgbPng(20, 20, () => [9, 9, 9]), 'w.png', { maxPixels: 300, onWarning: (m) => warnings.push(m) });
    expect(img.width).toBe(20);
    expect(warnings).toEqual(['w.png: is 20×20 = 400 pixels, above the limit of 300 pixels (PIL warns: possible decompression bomb); it is decoded, but consider resizing it']);
    expect(err(() => decodeImageFile(rgbPng(20, 20, () => [9, 9, 9]), 'w.png', { maxPixels: 199 })).message).toMatch(/^w\.png: is 20×20 = 400 pixels, over twice the limit of 199 pixels/);
    expect(checkPixelLimit({ width: 10, height: 10 }, 'ok.png', 100)).toBeNull();
  });
});

describe('decodeImageFile: PNG', () => {
  it('decodes RGB, RGBA, grey, grey+alpha and 16-bit PNGs like pngjs', () => {
    const w = 7, h = 5;
    const rgba = Buffer.alloc(w * h * 4);
    for (let i = 0; i < w * h; i++) rgba.set([(i * 37) % 256, (i * 91) % 256, (i * 53) % 256, 255 - i], i * 4);
    for (const [colorType, bitDepth] of [[2, 8], [6, 8], [0, 8], [4, 8], [2, 16], [6, 16]] as const) {
      const png = new PNG({ width: w, height: h, colorType, bitDepth, inputColorType: 6, inputHasAlpha: true });
      rgba.copy(png.data);
      const bytes = PNG.sync.write(png, { colorType, bitDepth, inputColorType: 6, inputHasAlpha: true });
      const want = PNG.sync.read(bytes);
      const got = decodeImageFile(bytes, 't.png');
      expect([got.width, got.height, got.channels]).toEqual([w, h, 4]);
      // pngjs scales 16-bit samples to 8 bits by rounding; we keep the high byte (as PIL's RGB;16B).
      const tol = bitDepth === 16 ? 1 : 0;
      for (let i = 0; i < want.data.length; i++) expect(Math.abs(got.data[i] - want.data[i]), `${colorType}/${bitDepth} byte ${i}`).toBeLessThanOrEqual(tol);
    }
  });

  it('decodes palette PNGs with tRNS, 1-bit grey and Adam7-interlaced PNGs', () => {
    // 4x2 palette image, 2 bits per pixel: indices 0..3 in a row, then reversed.
    const pal = chunk('PLTE', Uint8Array.from([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]));
    const trns = chunk('tRNS', Uint8Array.from([255, 128]));
    const raw = Uint8Array.from([0, 0b00011011, 0, 0b11100100]);
    const palPng = Buffer.concat([SIG, ihdr(4, 2, 2, 3), pal, trns, chunk('IDAT', deflateSync(raw)), chunk('IEND', new Uint8Array())]);
    const p = decodeImageFile(palPng, 'pal.png');
    expect(Array.from(p.data.subarray(0, 16))).toEqual([255, 0, 0, 255, 0, 255, 0, 128, 0, 0, 255, 255, 9, 9, 9, 255]);
    expect(Array.from(p.data.subarray(16, 20))).toEqual([9, 9, 9, 255]);
    const bit = Buffer.concat([SIG, ihdr(3, 1, 1, 0), chunk('IDAT', deflateSync(Uint8Array.from([0, 0b10100000]))), chunk('IEND', new Uint8Array())]);
    expect(Array.from(decodeImageFile(bit, 'bit.png').data)).toEqual([255, 255, 255, 255, 0, 0, 0, 255, 255, 255, 255, 255]);
    // Adam7: 10x9 grey, value (x + 10y) % 256, each pass its own filtered (filter 0) sub-image.
    const W = 10, H = 9;
    const passes = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]];
    const bytes: number[] = [];
    for (const [x0, y0, dx, dy] of passes) {
      for (let y = y0; y < H; y += dy) {
        if (x0 >= W) continue;
        bytes.push(0);
        for (let x = x0; x < W; x += dx) bytes.push(x + 10 * y);
      }
    }
    const inter = Buffer.concat([SIG, ihdr(W, H, 8, 0, 1), chunk('IDAT', deflateSync(Uint8Array.from(bytes))), chunk('IEND', new Uint8Array())]);
    const img = decodeImageFile(inter, 'adam7.png');
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) expect(img.data[(y * W + x) * 4]).toBe(x + 10 * y);
  });

  it('applies every EXIF orientation exactly as PIL exif_transpose', () => {
    for (const [o, [w, h], values] of PIL_TRANSPOSE) {
      const img = decodeImageFile(greyPng(3, 2, (x, y) => y * 3 + x, o), `o${o}.png`);
      expect([img.width, img.height], `orientation ${o}`).toEqual([w, h]);
      expect(Array.from({ length: w * h }, (_, i) => img.data[i * 4]), `orientation ${o}`).toEqual(values);
    }
    // Values outside 1..8 change nothing (PIL's method table has no entry).
    expect(decodeImageFile(greyPng(3, 2, (x, y) => y * 3 + x, 9), 'o9.png').width).toBe(3);
    expect(exifTranspose({ data: new Uint8Array(3 * 2 * 3), width: 3, height: 2, channels: 3 }, 6).width).toBe(2);
  });

  it('names truncated and corrupt PNGs with the reason', () => {
    const good = rgbPng(30, 20, (x, y) => [x * 8, y * 12, 100]);
    expect(err(() => decodeImageFile(good.subarray(0, good.length - 30), 'cut.png')).message).toMatch(/^cut\.png: truncated PNG: the IDAT chunk at byte 33 needs \d+ bytes, the file has \d+; it is incomplete/);
    expect(err(() => decodeImageFile(good.subarray(0, good.length - 12), 'noend.png')).message).toBe('noend.png: truncated PNG: no IEND chunk; the file is incomplete, export or download it again');
    const flipped = Buffer.from(good);
    flipped[45] ^= 0xff;
    expect(err(() => decodeImageFile(flipped, 'crc.png')).message).toBe('crc.png: corrupt PNG: the IDAT chunk at byte 33 fails its CRC check');
    // Valid chunks, but the compressed data holds too few rows.
    const short = Buffer.concat([SIG, ihdr(30, 20), chunk('IDAT', deflateSync(Buffer.alloc(91 * 3))), chunk('IEND', new Uint8Array())]);
    expect(err(() => decodeImageFile(short, 'short.png')).message).toBe('short.png: truncated PNG image data: 273 bytes inflated, 30×20 needs more');
    const badFilter = Buffer.concat([SIG, ihdr(2, 1), chunk('IDAT', deflateSync(Uint8Array.from([7, 1, 2, 3, 4, 5, 6]))), chunk('IEND', new Uint8Array())]);
    expect(err(() => decodeImageFile(badFilter, 'filter.png')).message).toBe('filter.png: corrupt PNG: unknown row filter 7');
  });
});

describe('decodeImageFile: JPEG and other formats', () => {
  it('decodes a JPEG and applies its EXIF orientation (6 = 90° clockwise: the red left half goes to the top)', () => {
    const plain = decodeImageFile(jpegWithExif(32, 16), 'plain.jpg');
    expect([plain.width, plain.height]).toEqual([32, 16]);
    expect(plain.data[0]).toBeGreaterThan(180); // red at the left
    const rot = decodeImageFile(jpegWithExif(32, 16, 6), 'rot.jpg');
    expect([rot.width, rot.height]).toEqual([16, 32]);
    const at = (x: number, y: number) => Array.from(rot.data.subarray((y * 16 + x) * 4, (y * 16 + x) * 4 + 3));
    expect(at(8, 4)[0]).toBeGreaterThan(180); // top: red
    expect(at(8, 28)[2]).toBeGreaterThan(180); // bottom: blue
    const ccw = decodeImageFile(jpegWithExif(32, 16, 8, true), 'ccw.jpg');
    expect(ccw.data[((28 * 16) + 8) * 4]).toBeGreaterThan(180); // 8 = 90° counter-clockwise: red at the bottom
  });

  it('names a truncated JPEG instead of decoding grey blocks', () => {
    const j = jpegWithExif(32, 32);
    expect(err(() => decodeImageFile(j.subarray(0, Math.floor(j.length * 0.7)), 'cut.jpg')).message).toBe('cut.jpg: truncated JPEG: the file ends before the end-of-image marker; it is incomplete, export or download it again');
  });

  it('says which formats it cannot decode', () => {
    const gif = Buffer.from('GIF89a\x20\x00\x10\x00', 'binary');
    expect(err(() => decodeImageFile(gif, 'anim.gif')).message).toBe('anim.gif: GIF images cannot be decoded here (PNG and JPEG can); convert it to PNG or JPEG');
  });
});
