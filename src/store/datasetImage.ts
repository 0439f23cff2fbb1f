// Decoding, downscaling and thumbnails of added images (browser: createImageBitmap + OffscreenCanvas).
// The header is read first (data/imageFile.ts): a truncated or unknown file is named, and PIL's
// decompression-bomb limit is checked before the browser decodes a single pixel. EXIF orientation:
// the bitmap is decoded with imageOrientation 'from-image' (as PIL's exif_transpose, the labeler's
// <img> and transformers see the image), and an oriented image is stored re-encoded upright, so the
// stored pixels, the boxes (oriented frame) and the training worker's decode can never disagree.

import { MAX_SIDE } from '../data/formats/types.ts';
import { checkPixelLimit, ImageError, MAX_ASPECT_RATIO, MIN_IMAGE_SIDE, readImageHeader, type ImageHeader } from '../data/image.ts';

export { ImageError };

export const THUMB_SIDE = 320;

/** SHA-256 of the file's bytes, hex: the identity of an image inside a dataset (no duplicates on re-import). */
export async function contentHash(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as BufferSource));
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
}

export interface ProcessedImage {
  stored: Blob;
  thumb: Blob;
  type: string;
  width: number;
  height: number;
  origWidth: number;
  origHeight: number;
  /** original / stored */
  scale: number;
  /** set when the image was downscaled, re-oriented or is above the pixel warning limit */
  notice?: string;
  header: ImageHeader;
  /** content hash of `stored` when it is not the file itself */
  storedHash?: string;
}

async function encode(bmp: ImageBitmap, type: string, quality?: number): Promise<Blob> {
  const c = new OffscreenCanvas(bmp.width, bmp.height);
  const g = c.getContext('2d');
  if (!g) throw new ImageError('', 'no 2D canvas to re-encode the image');
  g.drawImage(bmp, 0, 0);
  return c.convertToBlob({ type, quality });
}

/**
 * Reads the header (pixel limit, truncation), decodes the image with its EXIF orientation applied,
 * refuses what Qwen2.5-VL cannot take, stores it upright, downscales above MAX_SIDE, makes a
 * thumbnail. `bytes` are the file's bytes (already read for the content hash).
 */
export async function processImage(blob: Blob, type: string, bytes: Uint8Array): Promise<ProcessedImage> {
  const header = readImageHeader(bytes, '');
  const warn = checkPixelLimit(header, 'the image');
  let bmp: ImageBitmap;
  try {
    bmp = await createImageBitmap(blob, { imageOrientation: 'from-image' });
  } catch {
    throw new ImageError('', 'could not be decoded: the file is corrupt, in a format this browser cannot read, or too large to decode');
  }
  try {
    const W = bmp.width;
    const H = bmp.height;
    if (W !== header.width || H !== header.height) {
      throw new ImageError('', `decoded as ${W}×${H} but its header says ${header.width}×${header.height} (EXIF orientation ${header.orientation}); the file is corrupt or this browser does not apply EXIF orientation`);
    }
    if (W < MIN_IMAGE_SIDE || H < MIN_IMAGE_SIDE) throw new ImageError('', `is ${W}×${H}: Qwen2.5-VL needs at least ${MIN_IMAGE_SIDE} px on each side`);
    if (Math.max(W, H) / Math.min(W, H) > MAX_ASPECT_RATIO) throw new ImageError('', `is ${W}×${H}: aspect ratio above ${MAX_ASPECT_RATIO}, which Qwen2.5-VL refuses`);
    let stored = blob;
    let w = W;
    let h = H;
    const notices: string[] = [];
    if (warn) notices.push(warn.replace(/^the image: /, ''));
    let storedType = type;
    if (Math.max(W, H) > MAX_SIDE) {
      const s = MAX_SIDE / Math.max(W, H);
      w = Math.max(1, Math.round(W * s));
      h = Math.max(1, Math.round(H * s));
      const small = await createImageBitmap(bmp, { resizeWidth: w, resizeHeight: h, resizeQuality: 'high' });
      storedType = type === 'image/jpeg' || type === 'image/webp' ? type : 'image/png';
      stored = await encode(small, storedType, 0.92);
      small.close();
      notices.push(`downscaled from ${W}×${H} to ${w}×${h} (above ${MAX_SIDE} px); boxes are kept on the smaller image and shown in original pixels`);
    } else if (header.orientation >= 2 && header.orientation <= 8) {
      // Stored upright: every later decode (labeler, worker, export) sees the oriented pixels.
      storedType = type === 'image/jpeg' || type === 'image/webp' ? type : 'image/png';
      stored = await encode(bmp, storedType, 0.95);
      notices.push(`EXIF orientation ${header.orientation} applied (stored upright, ${W}×${H}), as PIL's exif_transpose does`);
    }
    const ts = Math.min(1, THUMB_SIDE / Math.max(w, h));
    const tb = await createImageBitmap(bmp, { resizeWidth: Math.max(1, Math.round(W * (ts * w / W))), resizeHeight: Math.max(1, Math.round(H * (ts * h / H))), resizeQuality: 'medium' });
    let thumb = await encode(tb, 'image/webp', 0.8);
    if (thumb.type !== 'image/webp') thumb = await encode(tb, 'image/jpeg', 0.85);
    tb.close();
    const storedHash = stored === blob ? undefined : await contentHash(new Uint8Array(await stored.arrayBuffer()));
    return { stored, thumb, type: storedType, width: w, height: h, origWidth: W, origHeight: H, scale: W / w, notice: notices.join('; ') || undefined, header, storedHash };
  } finally {
    bmp.close();
  }
}
