// Qwen2-VL / Qwen2.5-VL image preprocessing, as transformers' Qwen2VLImageProcessor does it:
// smart_resize → bicubic resize (PIL) → rescale 1/255 → CLIP normalize → repeat to the temporal
// patch size → flatten patches in (t, h/merge, w/merge, merge_h, merge_w) × (c, tp, y, x) order.
// Pixels come in as RGB or RGBA bytes (browser ImageData or any Node decoder).

// Files → pixels (header, pixel limit, EXIF orientation, PNG/JPEG decoding): imageFile.ts.
export { checkPixelLimit, decodeImageFile, exifTranspose, ImageError, MAX_IMAGE_PIXELS, readImageHeader, type DecodeOptions, type ImageFormat, type ImageHeader, type RawImage } from './imageFile.ts';
import type { RawImage } from './imageFile.ts';

export interface ImageProcessorConfig {
  patchSize: number;
  mergeSize: number;
  temporalPatchSize: number;
  minPixels: number;
  maxPixels: number;
  rescaleFactor: number;
  imageMean: [number, number, number];
  imageStd: [number, number, number];
}

// OpenAI CLIP statistics (transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD), Qwen2-VL's defaults.
export const CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

export const DEFAULT_IMAGE_CONFIG: ImageProcessorConfig = {
  patchSize: 14,
  mergeSize: 2,
  temporalPatchSize: 2,
  minPixels: 56 * 56,
  maxPixels: 28 * 28 * 1280,
  rescaleFactor: 1 / 255,
  imageMean: CLIP_MEAN,
  imageStd: CLIP_STD,
};

/** Images narrower or shorter than this are refused (as transformers' smart_resize does). */
export const MIN_IMAGE_SIDE = 10;
export const MAX_ASPECT_RATIO = 200;

/**
 * Reads a preprocessor_config.json (either the classic `min_pixels`/`max_pixels` fields or the newer
 * `size: {shortest_edge, longest_edge}` spelling); missing fields keep Qwen2-VL's defaults.
 */
export function imageProcessorConfig(json: Record<string, unknown> = {}, overrides: Partial<ImageProcessorConfig> = {}): ImageProcessorConfig {
  const num = (v: unknown, d: number) => (typeof v === 'number' && Number.isFinite(v) ? v : d);
  const tri = (v: unknown, d: [number, number, number]): [number, number, number] =>
    Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number') ? [v[0], v[1], v[2]] : d;
  const size = (json.size ?? {}) as Record<string, unknown>;
  const d = DEFAULT_IMAGE_CONFIG;
  const cfg: ImageProcessorConfig = {
    patchSize: num(json.patch_size, d.patchSize),
    mergeSize: num(json.merge_size, d.mergeSize),
    temporalPatchSize: num(json.temporal_patch_size, d.temporalPatchSize),
    minPixels: num(json.min_pixels, num(size.shortest_edge, d.minPixels)),
    maxPixels: num(json.max_pixels, num(size.longest_edge, d.maxPixels)),
    rescaleFactor: num(json.rescale_factor, d.rescaleFactor),
    imageMean: tri(json.image_mean, d.imageMean),
    imageStd: tri(json.image_std, d.imageStd),
    ...overrides,
  };
  if (!(cfg.minPixels > 0 && cfg.minPixels <= cfg.maxPixels)) {
    throw new Error(`image processor: need 0 < min_pixels <= max_pixels, got min_pixels ${cfg.minPixels}, max_pixels ${cfg.maxPixels}`);
  }
  return cfg;
}

/** Python's round(): ties go to the even neighbour (70/28 = 2.5 → 2, 42/28 = 1.5 → 2). */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * Target (height, width): both multiples of `factor`, area within [minPixels, maxPixels], aspect kept
 * as closely as possible. Same double arithmetic as transformers' smart_resize (incl. the newer
 * `max(factor, ·)` guard, which no image that passes the size checks below can reach differently).
 */
export function smartResize(height: number, width: number, factor = 28, minPixels = 56 * 56, maxPixels = 28 * 28 * 1280): [number, number] {
  if (!Number.isInteger(height) || !Number.isInteger(width) || height <= 0 || width <= 0) {
    throw new Error(`smart_resize: image size must be positive integers, got ${height}x${width} (HxW)`);
  }
  if (height < MIN_IMAGE_SIDE || width < MIN_IMAGE_SIDE) {
    throw new Error(`smart_resize: image ${height}x${width} (HxW) is too small: both sides must be at least ${MIN_IMAGE_SIDE} pixels`);
  }
  if (Math.max(height, width) / Math.min(height, width) > MAX_ASPECT_RATIO) {
    throw new Error(`smart_resize: image ${height}x${width} (HxW) has aspect ratio ${(Math.max(height, width) / Math.min(height, width)).toFixed(1)}, above the limit of ${MAX_ASPECT_RATIO}`);
  }
  let hBar = roundHalfEven(height / factor) * factor;
  let wBar = roundHalfEven(width / factor) * factor;
  if (hBar * wBar > maxPixels) {
    const beta = Math.sqrt((height * width) / maxPixels);
    hBar = Math.max(factor, Math.floor(height / beta / factor) * factor);
    wBar = Math.max(factor, Math.floor(width / beta / factor) * factor);
  } else if (hBar * wBar < minPixels) {
    const beta = Math.sqrt(minPixels / (height * width));
    hBar = Math.ceil((height * beta) / factor) * factor;
    wBar = Math.ceil((width * beta) / factor) * factor;
  }
  return [hBar, wBar];
}

/**
 * RGB bytes (3 per pixel) of an RGB or RGBA image. Alpha is dropped, as PIL's `convert("RGB")`
 * in transformers' convert_to_rgb does; `alpha: 'white'` composites onto white instead
 * (what qwen_vl_utils does for transparent PNGs).
 */
export function toRgb(img: RawImage, alpha: 'drop' | 'white' = 'drop'): Uint8Array {
  const { width, height, data } = img;
  const n = width * height;
  const ch = img.channels ?? (data.length === n * 4 ? 4 : data.length === n * 3 ? 3 : 0);
  if ((ch !== 3 && ch !== 4) || data.length !== n * ch) {
    throw new Error(`image: ${width}x${height} needs ${n * 3} (RGB) or ${n * 4} (RGBA) bytes, got ${data.length}${img.channels ? ` with channels=${img.channels}` : ''}`);
  }
  if (ch === 3) return data instanceof Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.length);
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const a = data[i * 4 + 3];
    for (let c = 0; c < 3; c++) {
      const v = data[i * 4 + c];
      // v·a/255 + 255·(1 − a/255), rounded: equal to PIL's paste-with-mask onto white for every v, a.
      out[i * 3 + c] = alpha === 'white' ? Math.round((v * a + 255 * (255 - a)) / 255) : v;
    }
  }
  return out;
}

// ---- Bicubic resize: PIL's Resample.c, bit for bit ----
// PIL (and so transformers' slow Qwen2VLImageProcessor, which resizes through PIL with BICUBIC)
// resamples separably, horizontal pass first into an 8-bit intermediate, then vertical. The filter
// is Keys' cubic with a = -0.5 and support 2; when downscaling the support widens by the scale factor
// (antialiasing). Coefficients are normalised per output pixel, converted to 22-bit fixed point
// (round half away from zero) and each pass rounds (+2^21) and clips to 0..255. Reproducing that
// integer path gives output identical to PIL's; src/data/image.test.ts checks hashes computed with
// Pillow 9.4 over up- and down-scales. transformers' fast (torchvision) processor differs from PIL
// by ±1 on a few pixels, so neither is "the" reference there.

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

function bicubicFilter(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

interface Coeffs { ksize: number; bounds: Int32Array; kk: Int32Array }

function precomputeCoeffs(inSize: number, outSize: number): Coeffs {
  const scale = inSize / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = 2 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  const ss = 1 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = bicubicFilter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? k[x] / ww : k[x];
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(ss: number): number {
  const v = Math.floor(ss / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Bicubic resize of RGB bytes (HWC), identical to PIL's `Image.resize(size, BICUBIC)`. */
export function resizeBicubic(rgb: Uint8Array, width: number, height: number, outWidth: number, outHeight: number): Uint8Array {
  if (rgb.length !== width * height * 3) throw new Error(`resizeBicubic: ${width}x${height} RGB needs ${width * height * 3} bytes, got ${rgb.length}`);
  if (!(outWidth > 0 && outHeight > 0 && Number.isInteger(outWidth) && Number.isInteger(outHeight))) {
    throw new Error(`resizeBicubic: bad output size ${outWidth}x${outHeight}`);
  }
  if (outWidth === width && outHeight === height) return rgb.slice();
  let src = rgb;
  let rowOffset = 0;
  const v = precomputeCoeffs(height, outHeight);
  if (outWidth !== width) {
    // Only rows the vertical pass reads are computed (as PIL does; it does not change values).
    const first = v.bounds[0];
    const last = v.bounds[outHeight * 2 - 2] + v.bounds[outHeight * 2 - 1];
    const h = precomputeCoeffs(width, outWidth);
    const rows = last - first;
    const tmp = new Uint8Array(rows * outWidth * 3);
    for (let y = 0; y < rows; y++) {
      const inRow = (y + first) * width * 3;
      for (let xx = 0; xx < outWidth; xx++) {
        const xmin = h.bounds[xx * 2], xn = h.bounds[xx * 2 + 1], ko = xx * h.ksize;
        let s0 = HALF, s1 = HALF, s2 = HALF;
        for (let x = 0; x < xn; x++) {
          const w = h.kk[ko + x], p = inRow + (x + xmin) * 3;
          s0 += src[p] * w; s1 += src[p + 1] * w; s2 += src[p + 2] * w;
        }
        const o = (y * outWidth + xx) * 3;
        tmp[o] = clip8(s0); tmp[o + 1] = clip8(s1); tmp[o + 2] = clip8(s2);
      }
    }
    src = tmp; rowOffset = first;
  }
  if (outHeight === height) return src;
  const out = new Uint8Array(outHeight * outWidth * 3);
  const stride = outWidth * 3;
  for (let yy = 0; yy < outHeight; yy++) {
    const ymin = v.bounds[yy * 2] - rowOffset, yn = v.bounds[yy * 2 + 1], ko = yy * v.ksize;
    for (let xc = 0; xc < stride; xc++) {
      let s = HALF;
      for (let y = 0; y < yn; y++) s += src[(y + ymin) * stride + xc] * v.kk[ko + y];
      out[yy * stride + xc] = clip8(s);
    }
  }
  return out;
}

/**
 * Rescale and normalize HWC RGB values (0..255) with transformers' float32 semantics:
 * `r = f32(v · rescale)` (product in double, as numpy's float64 rescale then astype(float32)),
 * then `(r − mean) / std` in float32 with mean/std rounded to float32.
 */
export function normalizeImage(rgb: ArrayLike<number>, cfg: Pick<ImageProcessorConfig, 'rescaleFactor' | 'imageMean' | 'imageStd'> = DEFAULT_IMAGE_CONFIG): Float32Array {
  const f = Math.fround;
  const mean = cfg.imageMean.map(f), std = cfg.imageStd.map(f);
  const out = new Float32Array(rgb.length);
  for (let i = 0; i < rgb.length; i++) {
    const c = i % 3;
    out[i] = f(f(f(rgb[i] * cfg.rescaleFactor) - mean[c]) / std[c]);
  }
  return out;
}

/**
 * Flatten a normalized HWC image (height, width multiples of patchSize·mergeSize) into
 * `pixelValues [gh·gw, 3·T·P·P]`, the single frame repeated T = temporalPatchSize times.
 * Row `((bh·(gw/m) + bw)·m + mh)·m + mw` holds patch (2·bh+mh, 2·bw+mw) for m = 2;
 * column `((c·T + tp)·P + y)·P + x`.
 */
export function patchify(normalized: Float32Array, height: number, width: number, cfg: Pick<ImageProcessorConfig, 'patchSize' | 'mergeSize' | 'temporalPatchSize'> = DEFAULT_IMAGE_CONFIG): { pixelValues: Float32Array; imageGridThw: Int32Array } {
  const P = cfg.patchSize, m = cfg.mergeSize, T = cfg.temporalPatchSize;
  if (height % (P * m) || width % (P * m)) throw new Error(`patchify: image ${height}x${width} (HxW) is not a multiple of patch_size·merge_size = ${P * m}`);
  if (normalized.length !== height * width * 3) throw new Error(`patchify: ${height}x${width}x3 image needs ${height * width * 3} values, got ${normalized.length}`);
  const gh = height / P, gw = width / P;
  const K = 3 * T * P * P;
  const pv = new Float32Array(gh * gw * K);
  let n = 0;
  for (let bh = 0; bh < gh / m; bh++) for (let bw = 0; bw < gw / m; bw++) for (let mh = 0; mh < m; mh++) for (let mw = 0; mw < m; mw++, n++) {
    const ph = bh * m + mh, pw = bw * m + mw;
    const row = n * K;
    for (let c = 0; c < 3; c++) for (let y = 0; y < P; y++) for (let x = 0; x < P; x++) {
      const v = normalized[((ph * P + y) * width + pw * P + x) * 3 + c];
      for (let tp = 0; tp < T; tp++) pv[row + ((c * T + tp) * P + y) * P + x] = v;
    }
  }
  return { pixelValues: pv, imageGridThw: Int32Array.of(1, gh, gw) };
}

export interface ProcessedImage {
  /** [N, 3·T·P·P], N = gh·gw. */
  pixelValues: Float32Array;
  /** [1, 3]: (t, gh, gw) in patches. */
  imageGridThw: Int32Array;
  /** Size after smart_resize (the frame grounding boxes live in). */
  width: number;
  height: number;
  originalWidth: number;
  originalHeight: number;
  /** Number of `<|image_pad|>` tokens this image takes: t·(gh/m)·(gw/m). */
  numTokens: number;
}

/** Full pipeline for one image: smart_resize, bicubic resize, rescale + normalize, patchify. */
export function preprocessImage(img: RawImage, cfg: ImageProcessorConfig = DEFAULT_IMAGE_CONFIG, opts: { alpha?: 'drop' | 'white' } = {}): ProcessedImage {
  const rgb = toRgb(img, opts.alpha);
  const factor = cfg.patchSize * cfg.mergeSize;
  const [h, w] = smartResize(img.height, img.width, factor, cfg.minPixels, cfg.maxPixels);
  const resized = resizeBicubic(rgb, img.width, img.height, w, h);
  const { pixelValues, imageGridThw } = patchify(normalizeImage(resized, cfg), h, w, cfg);
  return {
    pixelValues, imageGridThw, width: w, height: h, originalWidth: img.width, originalHeight: img.height,
    numTokens: imageGridThw[0] * (imageGridThw[1] / cfg.mergeSize) * (imageGridThw[2] / cfg.mergeSize),
  };
}

/** Concatenate several processed images in order: pixelValues [ΣN, K], imageGridThw [n, 3]. */
export function stackImages(images: { pixelValues: Float32Array; imageGridThw: ArrayLike<number> }[]): { pixelValues: Float32Array; imageGridThw: Int32Array } {
  const total = images.reduce((s, im) => s + im.pixelValues.length, 0);
  const pixelValues = new Float32Array(total);
  const imageGridThw = new Int32Array(images.length * 3);
  let o = 0;
  images.forEach((im, i) => {
    pixelValues.set(im.pixelValues, o);
    o += im.pixelValues.length;
    for (let j = 0; j < 3; j++) imageGridThw[i * 3 + j] = im.imageGridThw[j];
  });
  return { pixelValues, imageGridThw };
}
