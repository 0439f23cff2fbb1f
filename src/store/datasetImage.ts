// Decoding, downscaling and thumbnails of added images (browser: createImageBitmap + OffscreenCanvas).

import { MAX_SIDE } from '../data/formats/types.ts';
import { MAX_ASPECT_RATIO, MIN_IMAGE_SIDE } from '../data/image.ts';

export const THUMB_SIDE = 320;

export class ImageError extends Error {}

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
  /** set when the image was downscaled */
  notice?: string;
}

async function encode(bmp: ImageBitmap, type: string, quality?: number): Promise<Blob> {
  const c = new OffscreenCanvas(bmp.width, bmp.height);
  const g = c.getContext('2d');
  if (!g) throw new ImageError('no 2D canvas to re-encode the image');
  g.drawImage(bmp, 0, 0);
  return c.convertToBlob({ type, quality });
}

/**
 * Decodes the image (EXIF orientation applied, as <img> and createImageBitmap both do by
 * default), refuses what Qwen2.5-VL cannot take, downscales above MAX_SIDE, makes a thumbnail.
 */
export async function processImage(blob: Blob, type: string): Promise<ProcessedImage> {
  let bmp: ImageBitmap;
  try {
    bmp = await createImageBitmap(blob);
  } catch {
    throw new ImageError('could not be decoded: the file is corrupt, in a format this browser cannot read, or too large to decode');
  }
  try {
    const W = bmp.width;
    const H = bmp.height;
    if (W < MIN_IMAGE_SIDE || H < MIN_IMAGE_SIDE) throw new ImageError(`is ${W}×${H}: Qwen2.5-VL needs at least ${MIN_IMAGE_SIDE} px on each side`);
    if (Math.max(W, H) / Math.min(W, H) > MAX_ASPECT_RATIO) throw new ImageError(`is ${W}×${H}: aspect ratio above ${MAX_ASPECT_RATIO}, which Qwen2.5-VL refuses`);
    let stored = blob;
    let w = W;
    let h = H;
    let notice: string | undefined;
    let storedType = type;
    if (Math.max(W, H) > MAX_SIDE) {
      const s = MAX_SIDE / Math.max(W, H);
      w = Math.max(1, Math.round(W * s));
      h = Math.max(1, Math.round(H * s));
      const small = await createImageBitmap(bmp, { resizeWidth: w, resizeHeight: h, resizeQuality: 'high' });
      storedType = type === 'image/jpeg' || type === 'image/webp' ? type : 'image/png';
      stored = await encode(small, storedType, 0.92);
      small.close();
      notice = `downscaled from ${W}×${H} to ${w}×${h} (above ${MAX_SIDE} px); boxes are kept on the smaller image and shown in original pixels`;
    }
    const ts = Math.min(1, THUMB_SIDE / Math.max(w, h));
    const tb = await createImageBitmap(bmp, { resizeWidth: Math.max(1, Math.round(W * (ts * w / W))), resizeHeight: Math.max(1, Math.round(H * (ts * h / H))), resizeQuality: 'medium' });
    let thumb = await encode(tb, 'image/webp', 0.8);
    if (thumb.type !== 'image/webp') thumb = await encode(tb, 'image/jpeg', 0.85);
    tb.close();
    return { stored, thumb, type: storedType, width: w, height: h, origWidth: W, origHeight: H, scale: W / w, notice };
  } finally {
    bmp.close();
  }
}
