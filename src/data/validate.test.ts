// prepareRecords: a whole file checked before step 1 — images read and decoded (truncated, missing,
// too small, bombs), boxes against the decoded size, records against the method — all problems at
// once, the good records ready (decoded images + example text).
import { crc32, deflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { parseDatasetFile } from './formats/dataset.ts';
import { formatError } from './formats/jsonl.ts';
import { prepareRecords } from './validate.ts';

function chunk(type: string, d: Buffer): Buffer {
  const out = Buffer.alloc(12 + d.length);
  out.writeUInt32BE(d.length, 0);
  out.write(type, 4, 'ascii');
  d.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + d.length)), 8 + d.length);
  return out;
}
function png(w: number, h: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  const raw = Buffer.alloc((w * 3 + 1) * h, 90);
  for (let y = 0; y < h; y++) raw[y * (w * 3 + 1)] = 0;
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

const OPTS = { minPixels: 56 * 56, maxPixels: 28 * 28 * 1280 };
const line = (img: string, answer: string) => JSON.stringify({ messages: [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'Where?' }] }, { role: 'assistant', content: [{ type: 'text', text: answer }] }], images: [img] });

describe('prepareRecords', () => {
  it('reports every record that cannot train, each with file, line and reason; the good ones are ready', async () => {
    const files = new Map<string, Buffer>([
      ['ds/images/ok.png', png(112, 56)],
      ['ds/images/cut.png', png(112, 56).subarray(0, 60)],
      ['ds/images/tiny.png', png(8, 8)],
    ]);
    const reads: string[] = [];
    const read = async (p: string) => {
      reads.push(p);
      const b = files.get(p);
      if (!b) throw new Error('no such file');
      return b;
    };
    const text = [
      line('images/ok.png', '{"bbox_2d": [0, 0, 112, 56], "label": "all"}'),
      line('images/missing.png', 'A'),
      line('images/cut.png', 'A'),
      line('images/tiny.png', 'A'),
      line('images/ok.png', '{"bbox_2d": [10, 10, 113, 20]}'),
      JSON.stringify({ prompt: [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'Q' }] }], chosen: 'a', rejected: 'b', images: ['images/ok.png'] }),
    ].join('\n');
    const parsed = parseDatasetFile(text, 'ds/train.jsonl');
    expect(parsed.problems).toEqual([]);
    const r = await prepareRecords(parsed.records, 'sft', read, OPTS);
    expect(r.problems.map(formatError)).toEqual([
      'ds/train.jsonl line 2: image ds/images/missing.png cannot be read (no such file)',
      'ds/train.jsonl line 3: ds/images/cut.png: truncated PNG: the IDAT chunk at byte 33 needs 148 bytes, the file has 15; it is incomplete, export or download it again',
      'ds/train.jsonl line 4: image ds/images/tiny.png (8×8): image 8x8 (HxW) is too small: both sides must be at least 10 pixels',
      'ds/train.jsonl line 5: messages[1]: box [10, 10, 113, 20] is outside the 112×56 image (x2 113 > width 112) (the resized frame of ds/images/ok.png, 112×56)',
      "ds/train.jsonl line 6: it is a DPO pair (chosen/rejected); SFT needs a conversation whose last turn is the assistant's answer",
    ]);
    expect(r.ready.map((x) => x.record.line)).toEqual([1]);
    expect(r.ready[0].images[0]).toMatchObject({ width: 112, height: 56, channels: 4 });
    expect(r.ready[0].example.kind).toBe('sft');
    // ok.png is read once for its three records.
    expect(reads.filter((p) => p === 'ds/images/ok.png').length).toBe(1);
  });

  it('applies the pixel limit from the header, with PIL\'s warning below twice the limit', async () => {
    const parsed = parseDatasetFile(line('big.png', 'A') + '\n', 'train.jsonl');
    const warn = await prepareRecords(parsed.records, 'sft', async () => png(112, 56), { ...OPTS, pixelLimit: 4000 });
    expect(warn.problems).toEqual([]);
    expect(warn.warnings).toEqual(['big.png: is 112×56 = 6,272 pixels, above the limit of 4,000 pixels (PIL warns: possible decompression bomb); it is decoded, but consider resizing it']);
    const refuse = await prepareRecords(parsed.records, 'sft', async () => png(112, 56), { ...OPTS, pixelLimit: 3000 });
    expect(refuse.problems.map(formatError)).toEqual(["train.jsonl line 1: big.png: is 112×56 = 6,272 pixels, over twice the limit of 3,000 pixels (like PIL's MAX_IMAGE_PIXELS = 89,478,485, which refuses above 178,956,970): refused as a possible decompression bomb; resize it"]);
  });
});
