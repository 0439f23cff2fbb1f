// Image files, before any pixel is decoded: the header (format, size, EXIF orientation), a pixel
// limit against decompression bombs, and a decoder for PNG and JPEG that applies the orientation as
// PIL's ImageOps.exif_transpose does. Pure TypeScript on fflate and jpeg-js's decoder, so the same
// code runs in the Node CLI, a Worker and the page.
//
// Pixel limit (PIL's rule, Image._decompression_bomb_check): MAX_IMAGE_PIXELS = 1024·1024·1024 // 4 // 3
// = 89,478,485. Above it PIL warns (DecompressionBombWarning); above twice it PIL refuses
// (DecompressionBombError). We do the same with the same knob: `maxPixels` (default PIL's value)
// warns above it and refuses above 2 × maxPixels — checked from the header, before decoding.
//
// EXIF orientation (tag 0x0112), as exif_transpose maps it to Image.transpose:
//   2 FLIP_LEFT_RIGHT   3 ROTATE_180   4 FLIP_TOP_BOTTOM   5 TRANSPOSE
//   6 ROTATE_270 (90° clockwise)   7 TRANSVERSE   8 ROTATE_90 (90° counter-clockwise)
// Other values (1, 0, 9, …) leave the image as it is. Boxes refer to the oriented image (what PIL,
// transformers and the browser's <img> show), so `width`/`height` here are the oriented ones.

import { unzlibSync } from 'fflate';
// The decoder half of jpeg-js only: its index also pulls the encoder, which needs Node's Buffer.
import decodeJpegJs from 'jpeg-js/lib/decoder.js';
import { crc32 } from '../base/crc32.ts';

/** Decoded pixels. */
export interface RawImage {
  /** Row-major pixels, `channels` bytes per pixel. */
  data: Uint8Array | Uint8ClampedArray;
  width: number;
  height: number;
  /** 3 (RGB) or 4 (RGBA); inferred from data.length when absent. */
  channels?: 3 | 4;
}

/** PIL's Image.MAX_IMAGE_PIXELS. */
export const MAX_IMAGE_PIXELS = Math.floor(1024 * 1024 * 1024 / 4 / 3);

export type ImageFormat = 'png' | 'jpeg' | 'gif' | 'webp' | 'bmp' | 'avif' | 'ico';

export interface ImageHeader {
  format: ImageFormat;
  /** after the EXIF orientation (the frame boxes live in) */
  width: number;
  height: number;
  /** EXIF orientation 1..8 (1 when absent) */
  orientation: number;
  /** as stored in the file, before the orientation */
  storedWidth: number;
  storedHeight: number;
}

/** A file that cannot be used as an image; `file` names it, the message says why and what to do. */
export class ImageError extends Error {
  constructor(readonly file: string, readonly reason: string) {
    super(file ? `${file}: ${reason}` : reason);
    this.name = 'ImageError';
  }
}

const u16be = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];
const u32be = (b: Uint8Array, o: number) => ((b[o] << 24) >>> 0) + ((b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]);
const u16le = (b: Uint8Array, o: number) => b[o] | (b[o + 1] << 8);
const u24le = (b: Uint8Array, o: number) => b[o] | (b[o + 1] << 8) | (b[o + 2] << 16);
const u32le = (b: Uint8Array, o: number) => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16)) + ((b[o + 3] << 24) >>> 0);
const ascii = (b: Uint8Array, o: number, n: number) => String.fromCharCode(...b.subarray(o, o + n));

const PNG_SIG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Orientations that swap width and height. */
const SWAPS = new Set([5, 6, 7, 8]);

/**
 * Format, size and EXIF orientation from the first bytes of a file; no pixel is decoded. Throws
 * ImageError naming `name` when the file is not a recognised image or its header is cut short.
 */
export function readImageHeader(bytes: Uint8Array, name = ''): ImageHeader {
  const fail = (reason: string): never => {
    throw new ImageError(name, reason);
  };
  const need = (n: number, what: string) => {
    if (bytes.length < n) fail(`truncated ${what} header (${bytes.length} bytes); the file is incomplete, export or download it again`);
  };
  let format: ImageFormat;
  let w = 0;
  let h = 0;
  let orientation = 1;
  if (bytes.length >= 8 && PNG_SIG.every((v, i) => bytes[i] === v)) {
    format = 'png';
    need(33, 'PNG');
    if (ascii(bytes, 12, 4) !== 'IHDR') fail('corrupt PNG: the first chunk is not IHDR');
    w = u32be(bytes, 16);
    h = u32be(bytes, 20);
    const exif = pngChunk(bytes, 'eXIf');
    if (exif) orientation = tiffOrientation(exif);
  } else if (bytes.length >= 2 && bytes[0] === 0xff && bytes[1] === 0xd8) {
    format = 'jpeg';
    const j = jpegHeader(bytes, fail);
    w = j.width;
    h = j.height;
    orientation = j.orientation;
  } else if (bytes.length >= 6 && /^GIF8[79]a$/.test(ascii(bytes, 0, 6))) {
    format = 'gif';
    need(10, 'GIF');
    w = u16le(bytes, 6);
    h = u16le(bytes, 8);
  } else if (bytes.length >= 12 && ascii(bytes, 0, 4) === 'RIFF' && ascii(bytes, 8, 4) === 'WEBP') {
    format = 'webp';
    const r = webpHeader(bytes, fail);
    w = r.width;
    h = r.height;
    orientation = r.orientation;
  } else if (bytes.length >= 2 && bytes[0] === 0x42 && bytes[1] === 0x4d) {
    format = 'bmp';
    need(26, 'BMP');
    w = Math.abs(u32le(bytes, 18) | 0);
    h = Math.abs(u32le(bytes, 22) | 0);
  } else if (bytes.length >= 12 && ascii(bytes, 4, 4) === 'ftyp' && /avi[fs]/.test(ascii(bytes, 8, Math.min(32, bytes.length - 8)))) {
    format = 'avif';
    // The image spatial extent property box: 'ispe', version/flags, width, height (32-bit BE).
    const at = indexOfAscii(bytes, 'ispe');
    if (at < 0 || at + 16 > bytes.length) fail('corrupt or truncated AVIF: no image size (ispe) box');
    w = u32be(bytes, at + 8);
    h = u32be(bytes, at + 12);
  } else if (bytes.length >= 6 && u16le(bytes, 0) === 0 && u16le(bytes, 2) === 1 && u16le(bytes, 4) > 0) {
    format = 'ico';
    need(8, 'ICO');
    w = bytes[6] || 256;
    h = bytes[7] || 256;
  } else {
    return fail(bytes.length === 0 ? 'the file is empty' : 'not a PNG, JPEG, WebP, GIF, BMP, AVIF or ICO image (unrecognised first bytes)');
  }
  if (!(w > 0 && h > 0)) fail(`corrupt ${format.toUpperCase()} header: size ${w}×${h}`);
  const swap = SWAPS.has(orientation);
  return { format, width: swap ? h : w, height: swap ? w : h, orientation, storedWidth: w, storedHeight: h };
}

function indexOfAscii(b: Uint8Array, s: string, from = 0): number {
  const c = [...s].map((ch) => ch.charCodeAt(0));
  outer: for (let i = from; i + c.length <= b.length; i++) {
    for (let k = 0; k < c.length; k++) if (b[i + k] !== c[k]) continue outer;
    return i;
  }
  return -1;
}

/** Data of the first PNG chunk of this type (chunk lengths walked, nothing inflated). */
function pngChunk(b: Uint8Array, type: string): Uint8Array | null {
  for (let o = 8; o + 8 <= b.length; ) {
    const len = u32be(b, o);
    const t = ascii(b, o + 4, 4);
    if (t === type) return o + 8 + len <= b.length ? b.subarray(o + 8, o + 8 + len) : null;
    if (t === 'IEND') break;
    o += 12 + len;
  }
  return null;
}

/** Orientation (tag 0x0112) from TIFF-structured EXIF data ("Exif\0\0" prefix optional); 1 when absent or unreadable. */
export function tiffOrientation(d: Uint8Array): number {
  let o = 0;
  if (d.length >= 6 && ascii(d, 0, 4) === 'Exif' && d[4] === 0 && d[5] === 0) o = 6;
  if (d.length < o + 8) return 1;
  const le = d[o] === 0x49 && d[o + 1] === 0x49;
  if (!le && !(d[o] === 0x4d && d[o + 1] === 0x4d)) return 1;
  const r16 = (p: number) => (le ? u16le(d, o + p) : u16be(d, o + p));
  const r32 = (p: number) => (le ? u32le(d, o + p) : u32be(d, o + p));
  if (r16(2) !== 42) return 1;
  const ifd = r32(4);
  if (o + ifd + 2 > d.length) return 1;
  const n = r16(ifd);
  for (let i = 0; i < n; i++) {
    const e = ifd + 2 + i * 12;
    if (o + e + 12 > d.length) return 1;
    if (r16(e) === 0x0112) {
      const type = r16(e + 2);
      // SHORT (3) as written by cameras; LONG (4) is tolerated as PIL does.
      return type === 4 ? r32(e + 8) : r16(e + 8);
    }
  }
  return 1;
}

// SOFn markers that carry the frame size (not DHT C4, JPG C8, DAC CC).
const SOF = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);

function jpegHeader(b: Uint8Array, fail: (r: string) => never): { width: number; height: number; orientation: number } {
  let orientation = 1;
  let exifSeen = false;
  let o = 2;
  for (;;) {
    // Fill bytes (0xFF runs) may precede a marker.
    while (o < b.length && b[o] === 0xff && b[o + 1] === 0xff) o++;
    if (o + 4 > b.length) return fail('truncated JPEG header: it ends before the frame size (SOF); the file is incomplete, export or download it again');
    if (b[o] !== 0xff) return fail(`corrupt JPEG: expected a marker at byte ${o}, found 0x${b[o].toString(16).padStart(2, '0')}`);
    const m = b[o + 1];
    if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7)) {
      o += 2;
      continue;
    }
    if (m === 0xd9 || m === 0xda) return fail('corrupt JPEG: no frame size (SOF) before the image data');
    const len = u16be(b, o + 2);
    if (len < 2) return fail(`corrupt JPEG: segment 0xFF${m.toString(16).toUpperCase()} at byte ${o} has length ${len}`);
    const seg = o + 4;
    if (SOF.has(m)) {
      if (seg + 5 > b.length) return fail('truncated JPEG header: the frame size (SOF) is cut short; the file is incomplete');
      return { height: u16be(b, seg + 1), width: u16be(b, seg + 3), orientation };
    }
    // PIL reads the first APP1 Exif segment.
    if (m === 0xe1 && !exifSeen && seg + 6 <= b.length && ascii(b, seg, 4) === 'Exif') {
      exifSeen = true;
      orientation = tiffOrientation(b.subarray(seg, Math.min(b.length, o + 2 + len)));
    }
    o += 2 + len;
  }
}

function webpHeader(b: Uint8Array, fail: (r: string) => never): { width: number; height: number; orientation: number } {
  let width = 0;
  let height = 0;
  let orientation = 1;
  for (let o = 12; o + 8 <= b.length; ) {
    const t = ascii(b, o, 4);
    const len = u32le(b, o + 4);
    const d = o + 8;
    if (t === 'VP8X' && d + 10 <= b.length) {
      width = u24le(b, d + 4) + 1;
      height = u24le(b, d + 7) + 1;
    } else if (t === 'VP8 ' && !width) {
      if (d + 10 > b.length) fail('truncated WebP header');
      if (b[d + 3] !== 0x9d || b[d + 4] !== 0x01 || b[d + 5] !== 0x2a) fail('corrupt WebP: bad VP8 start code');
      width = u16le(b, d + 6) & 0x3fff;
      height = u16le(b, d + 8) & 0x3fff;
    } else if (t === 'VP8L' && !width) {
      if (d + 5 > b.length) fail('truncated WebP header');
      if (b[d] !== 0x2f) fail('corrupt WebP: bad VP8L signature');
      const bits = u32le(b, d + 1);
      width = (bits & 0x3fff) + 1;
      height = ((bits >>> 14) & 0x3fff) + 1;
    } else if (t === 'EXIF') {
      orientation = tiffOrientation(b.subarray(d, Math.min(b.length, d + len)));
    }
    o = d + len + (len & 1);
  }
  if (!width) fail('truncated or corrupt WebP: no VP8/VP8L/VP8X chunk with the image size');
  return { width, height, orientation };
}

/**
 * PIL's decompression-bomb rule on a header's size: a warning above `maxPixels`, an ImageError
 * above twice that. Returns the warning text (or null).
 */
export function checkPixelLimit(h: Pick<ImageHeader, 'width' | 'height'>, name: string, maxPixels = MAX_IMAGE_PIXELS): string | null {
  const pixels = Math.max(1, h.width) * Math.max(1, h.height);
  const fmt = (n: number) => n.toLocaleString('en-US');
  const size = `${h.width}×${h.height} = ${pixels >= 1e7 ? pixels.toExponential(2).replace('e+', 'e') : fmt(pixels)} pixels`;
  if (pixels > 2 * maxPixels) {
    throw new ImageError(name, `is ${size}, over twice the limit of ${fmt(maxPixels)} pixels (like PIL's MAX_IMAGE_PIXELS = 89,478,485, which refuses above ${fmt(2 * MAX_IMAGE_PIXELS)}): refused as a possible decompression bomb; resize it`);
  }
  if (pixels > maxPixels) return `${name}: is ${size}, above the limit of ${fmt(maxPixels)} pixels (PIL warns: possible decompression bomb); it is decoded, but consider resizing it`;
  return null;
}

export interface DecodeOptions {
  /** PIL's MAX_IMAGE_PIXELS (default 89,478,485): warn above, refuse above twice */
  maxPixels?: number;
  /** receives the pixel-limit warning */
  onWarning?(message: string): void;
}

/**
 * A PNG or JPEG file → RGBA pixels with the EXIF orientation applied (exif_transpose). The header
 * is read and the pixel limit checked before anything is decoded. Every failure is an ImageError
 * naming `name`: not an image, another format, a truncated or corrupt file, a decompression bomb.
 */
export function decodeImageFile(bytes: Uint8Array, name: string, opts: DecodeOptions = {}): RawImage {
  const head = readImageHeader(bytes, name);
  const warning = checkPixelLimit(head, name, opts.maxPixels);
  if (warning) opts.onWarning?.(warning);
  let img: RawImage;
  if (head.format === 'png') img = decodePng(bytes, name);
  else if (head.format === 'jpeg') img = decodeJpeg(bytes, name);
  else throw new ImageError(name, `${head.format.toUpperCase()} images cannot be decoded here (PNG and JPEG can); convert it to PNG or JPEG`);
  if (img.width !== head.storedWidth || img.height !== head.storedHeight) {
    throw new ImageError(name, `corrupt ${head.format.toUpperCase()}: the header says ${head.storedWidth}×${head.storedHeight} but ${img.width}×${img.height} pixels were decoded`);
  }
  return exifTranspose(img, head.orientation);
}

function decodeJpeg(bytes: Uint8Array, name: string): RawImage {
  // jpeg-js fills missing data with grey instead of failing: check the file ends with EOI after
  // the scan first (entropy-coded data stuffs 0xFF as FF 00, so FF D9 only occurs as the marker).
  let end = bytes.length - 1;
  while (end > 2 && !(bytes[end - 1] === 0xff && bytes[end] === 0xd9)) end--;
  const sos = indexOfMarker(bytes, 0xda);
  if (sos < 0 || end <= sos) throw new ImageError(name, 'truncated JPEG: the file ends before the end-of-image marker; it is incomplete, export or download it again');
  try {
    const j = decodeJpegJs(bytes, { useTArray: true, formatAsRGBA: true, tolerantDecoding: false, maxResolutionInMP: 1e6, maxMemoryUsageInMB: 4096 });
    return { data: j.data, width: j.width, height: j.height, channels: 4 };
  } catch (e) {
    throw new ImageError(name, `corrupt JPEG (${(e as Error).message})`);
  }
}

function indexOfMarker(b: Uint8Array, m: number): number {
  for (let o = 2; o + 4 <= b.length; ) {
    if (b[o] !== 0xff) return -1;
    if (b[o + 1] === m) return o;
    if (b[o + 1] === 0xd8 || (b[o + 1] >= 0xd0 && b[o + 1] <= 0xd7) || b[o + 1] === 0xff) {
      o += b[o + 1] === 0xff ? 1 : 2;
      continue;
    }
    o += 2 + u16be(b, o + 2);
  }
  return -1;
}

// ---- PNG (all colour types and bit depths, Adam7 interlace, tRNS; 16-bit keeps the high byte) ----


const CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
const ADAM7 = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]];

export function decodePng(b: Uint8Array, name: string): RawImage {
  const fail = (reason: string): never => {
    throw new ImageError(name, reason);
  };
  let width = 0, height = 0, depth = 0, ctype = 0, interlace = 0;
  let palette: Uint8Array | null = null;
  let trns: Uint8Array | null = null;
  const idat: Uint8Array[] = [];
  let ended = false;
  for (let o = 8; o < b.length && !ended; ) {
    if (o + 12 > b.length) fail(`truncated PNG: a chunk header at byte ${o} is cut short; the file is incomplete, export or download it again`);
    const len = u32be(b, o);
    const type = ascii(b, o + 4, 4);
    if (o + 12 + len > b.length) fail(`truncated PNG: the ${type} chunk at byte ${o} needs ${len} bytes, the file has ${b.length - o - 12}; it is incomplete, export or download it again`);
    const data = b.subarray(o + 8, o + 8 + len);
    if (crc32(b.subarray(o + 4, o + 8 + len)) !== u32be(b, o + 8 + len)) fail(`corrupt PNG: the ${type} chunk at byte ${o} fails its CRC check`);
    if (type === 'IHDR') {
      width = u32be(data, 0);
      height = u32be(data, 4);
      depth = data[8];
      ctype = data[9];
      interlace = data[12];
    } else if (type === 'PLTE') palette = data;
    else if (type === 'tRNS') trns = data;
    else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') ended = true;
    o += 12 + len;
  }
  if (!ended) fail('truncated PNG: no IEND chunk; the file is incomplete, export or download it again');
  const ch = CHANNELS[ctype];
  if (!ch || ![1, 2, 4, 8, 16].includes(depth) || (ctype !== 0 && ctype !== 3 && depth < 8) || (ctype === 3 && depth > 8)) fail(`corrupt PNG: colour type ${ctype} with bit depth ${depth}`);
  if (ctype === 3 && !palette) fail('corrupt PNG: a palette image without a PLTE chunk');
  if (!idat.length) fail('corrupt PNG: no image data (IDAT)');
  let raw: Uint8Array;
  try {
    const all = new Uint8Array(idat.reduce((s, d) => s + d.length, 0));
    let p = 0;
    for (const d of idat) {
      all.set(d, p);
      p += d.length;
    }
    raw = unzlibSync(all);
  } catch (e) {
    return fail(`corrupt or truncated PNG image data (${(e as Error).message})`);
  }
  const bpp = Math.max(1, (ch * depth) >> 3);
  const out = new Uint8Array(width * height * 4);
  let pos = 0;
  const passes = interlace ? ADAM7 : [[0, 0, 1, 1]];
  for (const [x0, y0, dx, dy] of passes) {
    const pw = Math.ceil((width - x0) / dx);
    const ph = Math.ceil((height - y0) / dy);
    if (pw <= 0 || ph <= 0) continue;
    const stride = Math.ceil((pw * ch * depth) / 8);
    if (pos + (stride + 1) * ph > raw.length) fail(`truncated PNG image data: ${raw.length} bytes inflated, ${width}×${height} needs more`);
    let prev = new Uint8Array(stride);
    for (let y = 0; y < ph; y++) {
      const f = raw[pos];
      const line = raw.slice(pos + 1, pos + 1 + stride);
      pos += stride + 1;
      unfilter(f, line, prev, bpp, fail);
      writeRow(line, pw, y0 + y * dy, x0, dx, width, depth, ctype, palette, trns, out);
      prev = line;
    }
  }
  return { data: out, width, height, channels: 4 };
}

function unfilter(f: number, line: Uint8Array, prev: Uint8Array, bpp: number, fail: (r: string) => never): void {
  const n = line.length;
  switch (f) {
    case 0: return;
    case 1: for (let i = bpp; i < n; i++) line[i] = (line[i] + line[i - bpp]) & 255; return;
    case 2: for (let i = 0; i < n; i++) line[i] = (line[i] + prev[i]) & 255; return;
    case 3: for (let i = 0; i < n; i++) line[i] = (line[i] + (((i >= bpp ? line[i - bpp] : 0) + prev[i]) >> 1)) & 255; return;
    case 4:
      for (let i = 0; i < n; i++) {
        const a = i >= bpp ? line[i - bpp] : 0, up = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
        const p = a + up - c, pa = Math.abs(p - a), pb = Math.abs(p - up), pc = Math.abs(p - c);
        line[i] = (line[i] + (pa <= pb && pa <= pc ? a : pb <= pc ? up : c)) & 255;
      }
      return;
    default: fail(`corrupt PNG: unknown row filter ${f}`);
  }
}

function writeRow(line: Uint8Array, pw: number, y: number, x0: number, dx: number, width: number, depth: number, ctype: number, pal: Uint8Array | null, trns: Uint8Array | null, out: Uint8Array): void {
  const ch = CHANNELS[ctype];
  // Sample k of this row, scaled to 8 bits (16-bit: high byte; 1/2/4-bit grey: replicated).
  const sample = (k: number): number => {
    if (depth === 8) return line[k];
    if (depth === 16) return line[k * 2];
    const bit = k * depth;
    const v = (line[bit >> 3] >> (8 - depth - (bit & 7))) & ((1 << depth) - 1);
    return ctype === 3 ? v : Math.round((v * 255) / ((1 << depth) - 1));
  };
  const raw16 = (k: number) => (depth === 16 ? (line[k * 2] << 8) | line[k * 2 + 1] : depth === 8 ? line[k] : (line[(k * depth) >> 3] >> (8 - depth - ((k * depth) & 7))) & ((1 << depth) - 1));
  for (let i = 0; i < pw; i++) {
    const o = (y * width + x0 + i * dx) * 4;
    let r: number, g: number, bl: number, a = 255;
    if (ctype === 3) {
      const idx = sample(i);
      r = pal![idx * 3] ?? 0; g = pal![idx * 3 + 1] ?? 0; bl = pal![idx * 3 + 2] ?? 0;
      if (trns && idx < trns.length) a = trns[idx];
    } else if (ctype === 0 || ctype === 4) {
      r = g = bl = sample(i * ch);
      if (ctype === 4) a = sample(i * ch + 1);
      else if (trns && trns.length >= 2 && raw16(i) === u16be(trns, 0)) a = 0;
    } else {
      r = sample(i * ch); g = sample(i * ch + 1); bl = sample(i * ch + 2);
      if (ctype === 6) a = sample(i * ch + 3);
      else if (trns && trns.length >= 6 && raw16(i * 3) === u16be(trns, 0) && raw16(i * 3 + 1) === u16be(trns, 2) && raw16(i * 3 + 2) === u16be(trns, 4)) a = 0;
    }
    out[o] = r; out[o + 1] = g; out[o + 2] = bl; out[o + 3] = a;
  }
}

/**
 * PIL's exif_transpose on decoded pixels: orientation 2..8 → the Image.transpose listed in the
 * header of this file; anything else returns the image unchanged.
 */
export function exifTranspose(img: RawImage, orientation: number): RawImage {
  if (orientation < 2 || orientation > 8) return img;
  const { width: W, height: H, data } = img;
  const ch = img.channels ?? (data.length === W * H * 4 ? 4 : 3);
  const swap = SWAPS.has(orientation);
  const ow = swap ? H : W;
  const oh = swap ? W : H;
  const out = new Uint8Array(ow * oh * ch);
  // Source pixel (sx, sy) of output pixel (x, y) for each transpose.
  const src: (x: number, y: number) => number =
    orientation === 2 ? (x, y) => y * W + (W - 1 - x) // FLIP_LEFT_RIGHT
    : orientation === 3 ? (x, y) => (H - 1 - y) * W + (W - 1 - x) // ROTATE_180
    : orientation === 4 ? (x, y) => (H - 1 - y) * W + x // FLIP_TOP_BOTTOM
    : orientation === 5 ? (x, y) => x * W + y // TRANSPOSE
    : orientation === 6 ? (x, y) => (H - 1 - x) * W + y // ROTATE_270 (clockwise)
    : orientation === 7 ? (x, y) => (H - 1 - x) * W + (W - 1 - y) // TRANSVERSE
    : (x, y) => x * W + (W - 1 - y); // 8: ROTATE_90 (counter-clockwise)
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      const s = src(x, y) * ch;
      const o = (y * ow + x) * ch;
      for (let c = 0; c < ch; c++) out[o + c] = data[s + c];
    }
  }
  return { data: out, width: ow, height: oh, channels: ch as 3 | 4 };
}
