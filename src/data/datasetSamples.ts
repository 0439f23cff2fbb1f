// What the trainer reads: a dataset's images (Blob + sizes) and their task records. React-free,
// so the training worker can import it and read IndexedDB directly.
//
//   const { dataset, samples } = await loadSamples(datasetId);
//   for (const s of samples) {
//     const bmp = await createImageBitmap(s.blob);   // s.width x s.height pixels (the stored image)
//     for (const r of s.records) ...                 // r.kind: 'sft' | 'preference' | 'rl'
//   }
//
// Grounding answers in records are Qwen2.5-VL bbox_2d JSON in the smart-resized frame of the
// stored image with dataset.minPixels / dataset.maxPixels: preprocess with the same values.

import { taskRecords, type TaskRecord } from './formats/records.ts';
import { naturalCompare, type DatasetMeta, type ImageRecord } from './formats/types.ts';
import { getBlobs, getDataset, listImages } from './datasetDb.ts';

export interface Sample {
  imageId: string;
  name: string;
  /** the stored image (what the model sees, before smart_resize) */
  blob: Blob;
  width: number;
  height: number;
  /** size of the file the user gave (>= width/height when it was downscaled at import) */
  origWidth: number;
  origHeight: number;
  /** the raw labels, boxes in stored pixels */
  image: ImageRecord;
  /** training records under the dataset's task kind (empty for unlabelled images) */
  records: TaskRecord[];
}

export async function loadSamples(datasetId: string, opts: { labelledOnly?: boolean } = {}): Promise<{ dataset: DatasetMeta; samples: Sample[] }> {
  const dataset = await getDataset(datasetId);
  if (!dataset || dataset.deletedAt) throw new Error(`dataset ${datasetId} not found`);
  const images = (await listImages(datasetId)).filter((r) => !r.deletedAt).sort(byOrder);
  const samples: Sample[] = [];
  for (const image of images) {
    const records = taskRecords(dataset, image);
    if (opts.labelledOnly !== false && records.length === 0) continue;
    const blobs = await getBlobs(image.id);
    if (!blobs) continue;
    samples.push({
      imageId: image.id, name: image.name, blob: blobs.image, width: image.width, height: image.height,
      origWidth: image.origWidth, origHeight: image.origHeight, image, records,
    });
  }
  return { dataset, samples };
}

export function byOrder(a: ImageRecord, b: ImageRecord): number {
  return a.order - b.order || naturalCompare(a.name, b.name);
}
