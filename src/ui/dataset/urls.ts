// Object URLs for stored thumbnails and images, created on demand and cached (images LRU-bounded,
// so a long labelling session does not keep every full-size image decoded).

import { useEffect, useState } from 'react';
import { imageBlobs } from '../../store/dataset.ts';

const thumbs = new Map<string, Promise<string | null>>();
const images = new Map<string, Promise<string | null>>();
const IMAGE_CACHE = 12;

export function thumbUrl(id: string): Promise<string | null> {
  let p = thumbs.get(id);
  if (!p) {
    p = imageBlobs(id).then((b) => (b ? URL.createObjectURL(b.thumb) : null), () => null);
    thumbs.set(id, p);
  }
  return p;
}

export function imageUrl(id: string): Promise<string | null> {
  let p = images.get(id);
  if (p) {
    images.delete(id); // refresh LRU position
    images.set(id, p);
    return p;
  }
  p = imageBlobs(id).then((b) => (b ? URL.createObjectURL(b.image) : null), () => null);
  images.set(id, p);
  while (images.size > IMAGE_CACHE) {
    const [old, op] = images.entries().next().value as [string, Promise<string | null>];
    images.delete(old);
    void op.then((u) => u && setTimeout(() => URL.revokeObjectURL(u), 10_000));
  }
  return p;
}

/** Decodes an image ahead of time (next/previous in the labeler) so switching is instant. */
export function preloadImage(id: string): void {
  void imageUrl(id).then((u) => {
    if (!u) return;
    const im = new Image();
    im.src = u;
    void im.decode?.().catch(() => undefined);
  });
}

export function useUrl(id: string | null, kind: 'thumb' | 'image', enabled = true): string | null {
  // Keyed by id so a stale URL of the previous image is never shown with the new one's boxes.
  const [state, setState] = useState<{ id: string; url: string | null } | null>(null);
  useEffect(() => {
    if (!id || !enabled) return;
    let live = true;
    void (kind === 'thumb' ? thumbUrl(id) : imageUrl(id)).then((url) => live && setState({ id, url }));
    return () => {
      live = false;
    };
  }, [id, kind, enabled]);
  return id && enabled && state?.id === id ? state.url : null;
}
