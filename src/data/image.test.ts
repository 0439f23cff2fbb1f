import { describe, expect, it } from 'vitest';
import {
  CLIP_MEAN, CLIP_STD, DEFAULT_IMAGE_CONFIG, imageProcessorConfig, normalizeImage, patchify, preprocessImage,
  resizeBicubic, roundHalfEven, smartResize, stackImages, toRgb,
} from './image.ts';

// Same generators as the Pillow script that produced PIL_CASES (Pillow 9.4, Image.BICUBIC):
//   lcg:    s = (s·1664525 + 1013904223) mod 2^32 per byte, byte = s >> 24, seed = w·1000 + h
//   smooth: (x·37 + y·91 + c·53 + ((x·y) mod 17)·11) mod 256
//   Image.frombytes('RGB', (w, h), data).resize((ow, oh), Image.BICUBIC).tobytes() → FNV-1a, sum, probes
function lcgBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}
function smoothBytes(w: number, h: number): Uint8Array {
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) {
    out[(y * w + x) * 3 + c] = (x * 37 + y * 91 + c * 53 + ((x * y) % 17) * 11) % 256;
  }
  return out;
}
function fnv1a(b: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const v of b) h = Math.imul(h ^ v, 0x01000193) >>> 0;
  return h;
}
const PIL_CASES: [string, number, number, number, number, number, number, number[]][] = [
  ['lcg', 37, 23, 56, 28, 0xe594cee1, 589916, [159, 106, 176]],
  ['lcg', 200, 150, 84, 56, 0x6d723f10, 1802189, [130, 131, 130]],
  ['lcg', 100, 60, 140, 28, 0x8f5244b5, 1490688, [54, 130, 64]],
  ['lcg', 64, 64, 64, 32, 0x9855db62, 786877, [90, 207, 185]],
  ['lcg', 50, 40, 28, 40, 0x9987954b, 426500, [202, 126, 176]],
  ['lcg', 13, 11, 28, 28, 0x779d860a, 304307, [54, 243, 0]],
  ['lcg', 301, 17, 56, 12, 0x8a51ff86, 255821, [112, 108, 102]],
  ['smooth', 37, 23, 56, 28, 0x8eb5d900, 602531, [0, 170, 232]],
  ['smooth', 200, 150, 84, 56, 0x8b68f5e7, 1801292, [109, 123, 85]],
  ['smooth', 100, 60, 140, 28, 0x9041f441, 1503882, [67, 77, 140]],
  ['smooth', 64, 64, 64, 32, 0x65c72928, 787005, [62, 113, 48]],
  ['smooth', 50, 40, 28, 40, 0xbd7b8d07, 431208, [16, 58, 130]],
  ['smooth', 13, 11, 28, 28, 0xdd0b7190, 298839, [0, 192, 191]],
  ['smooth', 301, 17, 56, 12, 0x189ecdba, 256637, [107, 127, 123]],
];

describe('smartResize', () => {
  it('matches the Qwen2-VL image processor on known sizes', () => {
    expect(smartResize(1092, 1568)).toEqual([812, 1176]);
    expect(smartResize(56, 84)).toEqual([56, 84]);
    expect(smartResize(448, 448)).toEqual([448, 448]);
    // below min_pixels: scaled up with ceil
    expect(smartResize(28, 28)).toEqual([56, 56]);
    expect(smartResize(10, 10)).toEqual([56, 56]);
    // custom factor / limits
    expect(smartResize(100, 100, 28, 56 * 56, 56 * 56)).toEqual([56, 56]);
  });
  it('rounds half to even like Python', () => {
    expect(roundHalfEven(2.5)).toBe(2);
    expect(roundHalfEven(1.5)).toBe(2);
    expect(roundHalfEven(4.5)).toBe(4);
    expect(roundHalfEven(3.5)).toBe(4);
    expect(roundHalfEven(2.4999)).toBe(2);
    expect(roundHalfEven(2.5001)).toBe(3);
    // 70/28 = 2.5 → 56 (not 84); 42/28 = 1.5 → 56; 126/28 = 4.5 → 112
    expect(smartResize(70, 126, 28, 1, 1e9)).toEqual([56, 112]);
    expect(smartResize(42, 70, 28, 1, 1e9)).toEqual([56, 56]);
  });
  it('keeps the area within the limits and sides multiples of the factor', () => {
    for (const [h, w] of [[3000, 4000], [17, 3000], [1000, 11], [640, 480], [1, 1].map((x) => x * 333)]) {
      const [rh, rw] = smartResize(h, w);
      expect(rh % 28).toBe(0);
      expect(rw % 28).toBe(0);
      expect(rh * rw).toBeLessThanOrEqual(DEFAULT_IMAGE_CONFIG.maxPixels);
      expect(rh * rw).toBeGreaterThanOrEqual(DEFAULT_IMAGE_CONFIG.minPixels);
    }
  });
  it('refuses extreme aspect ratios and tiny images, naming the size', () => {
    expect(() => smartResize(10, 2010)).toThrow(/10x2010.*aspect ratio 201\.0.*200/);
    expect(() => smartResize(10, 2000)).not.toThrow();
    expect(() => smartResize(9, 100)).toThrow(/9x100.*too small/);
    expect(() => smartResize(0, 100)).toThrow(/positive integers/);
    expect(() => smartResize(10.5, 100)).toThrow(/positive integers/);
  });
});

describe('resizeBicubic', () => {
  it.each(PIL_CASES)('is identical to PIL BICUBIC (%s %dx%d → %dx%d)', (kind, w, h, ow, oh, hash, sum, probes) => {
    const src = kind === 'lcg' ? lcgBytes(w * h * 3, w * 1000 + h) : smoothBytes(w, h);
    const out = resizeBicubic(src, w, h, ow, oh);
    expect(out.length).toBe(ow * oh * 3);
    expect([out[0], out[out.length >> 1], out[out.length - 1]]).toEqual(probes);
    expect(out.reduce((s, v) => s + v, 0)).toBe(sum);
    expect(fnv1a(out)).toBe(hash);
  });
  it('keeps a constant image constant and returns a copy at the same size', () => {
    const src = new Uint8Array(30 * 20 * 3).fill(77);
    expect(resizeBicubic(src, 30, 20, 56, 28).every((v) => v === 77)).toBe(true);
    expect(resizeBicubic(src, 30, 20, 14, 14).every((v) => v === 77)).toBe(true);
    const same = resizeBicubic(src, 30, 20, 30, 20);
    expect(same).not.toBe(src);
    expect(same).toEqual(src);
  });
});

describe('normalize + patchify', () => {
  it('normalizes with float32 CLIP statistics', () => {
    const n = normalizeImage([0, 255, 128]);
    const f = Math.fround;
    expect(n[0]).toBe(f(f(0 - f(CLIP_MEAN[0])) / f(CLIP_STD[0])));
    expect(n[1]).toBe(f(f(f(255 / 255) - f(CLIP_MEAN[1])) / f(CLIP_STD[1])));
    expect(n[2]).toBeCloseTo((128 / 255 - CLIP_MEAN[2]) / CLIP_STD[2], 6);
  });
  it('flattens patches in (bh, bw, mh, mw) × (c, t, y, x) order, duplicating the frame', () => {
    const H = 28, W = 56; // gh = 2, gw = 4
    const img = new Float32Array(H * W * 3);
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) for (let c = 0; c < 3; c++) img[(y * W + x) * 3 + c] = y * 1000 + x * 10 + c;
    const { pixelValues, imageGridThw } = patchify(img, H, W);
    expect([...imageGridThw]).toEqual([1, 2, 4]);
    expect(pixelValues.length).toBe(8 * 1176);
    // row 5 = bh 0, bw 1, mh 0, mw 1 → patch (0, 3); column (c=2, tp=1, y=3, x=4)
    const k = ((2 * 2 + 1) * 14 + 3) * 14 + 4;
    expect(pixelValues[5 * 1176 + k]).toBe(3 * 1000 + (3 * 14 + 4) * 10 + 2);
    // tp 0 and 1 carry the same frame
    for (let i = 0; i < 196; i++) expect(pixelValues[2 * 1176 + 196 + i]).toBe(pixelValues[2 * 1176 + i]);
  });
  it('refuses sizes that are not multiples of 28', () => {
    expect(() => patchify(new Float32Array(14 * 28 * 3), 14, 28)).toThrow(/14x28.*28/);
  });
});

describe('preprocessImage', () => {
  it('runs the whole pipeline on RGBA input', () => {
    const w = 120, h = 90;
    const rgba = new Uint8ClampedArray(w * h * 4);
    const rgb = smoothBytes(w, h);
    for (let i = 0; i < w * h; i++) { rgba.set(rgb.subarray(i * 3, i * 3 + 3), i * 4); rgba[i * 4 + 3] = 255; }
    const a = preprocessImage({ data: rgba, width: w, height: h });
    const b = preprocessImage({ data: rgb, width: w, height: h, channels: 3 });
    const [rh, rw] = smartResize(h, w);
    expect([a.height, a.width]).toEqual([rh, rw]);
    expect([...a.imageGridThw]).toEqual([1, rh / 14, rw / 14]);
    expect(a.numTokens).toBe((rh / 28) * (rw / 28));
    expect(a.pixelValues.length).toBe((rh / 14) * (rw / 14) * 1176);
    expect(a.pixelValues).toEqual(b.pixelValues);
    expect([a.originalWidth, a.originalHeight]).toEqual([w, h]);
  });
  it('drops alpha by default, composites on white on request', () => {
    const px = { data: Uint8Array.of(10, 20, 30, 0, 200, 100, 50, 128), width: 2, height: 1 };
    expect([...toRgb(px)]).toEqual([10, 20, 30, 200, 100, 50]);
    expect([...toRgb(px, 'white')]).toEqual([255, 255, 255, 227, 177, 152]);
    expect(() => toRgb({ data: new Uint8Array(7), width: 2, height: 1 })).toThrow(/2x1 needs 6 .*8.*got 7/);
  });
  it('stacks images and reads preprocessor_config.json', () => {
    const p = (w: number) => preprocessImage({ data: smoothBytes(w, 56), width: w, height: 56, channels: 3 });
    const s = stackImages([p(56), p(84)]);
    expect([...s.imageGridThw]).toEqual([1, 4, 4, 1, 4, 6]);
    expect(s.pixelValues.length).toBe((16 + 24) * 1176);
    const cfg = imageProcessorConfig({ min_pixels: 3136, max_pixels: 12845056, patch_size: 14, merge_size: 2, temporal_patch_size: 2, image_mean: CLIP_MEAN, image_std: CLIP_STD });
    expect(cfg.maxPixels).toBe(12845056);
    expect(imageProcessorConfig({ size: { shortest_edge: 100, longest_edge: 5000 } })).toMatchObject({ minPixels: 100, maxPixels: 5000 });
    expect(() => imageProcessorConfig({ min_pixels: 10, max_pixels: 5 })).toThrow(/min_pixels 10, max_pixels 5/);
  });
});
