// CRC-32 (IEEE 802.3, zlib's crc32): checkpoint framing (train/checkpoint.ts) and PNG chunk checks
// (data/imageFile.ts) share this one definition; a base module, so data and train both reach it.

// Slicing-by-4 tables: T[0] is the classic byte table; T[k][n] advances T[k-1][n] by one zero byte.
const CRC_T = (() => {
  const t = Array.from({ length: 4 }, () => new Uint32Array(256));
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[0][n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) for (let k = 1; k < 4; k++) t[k][n] = (t[0][t[k - 1][n] & 0xff] ^ (t[k - 1][n] >>> 8)) >>> 0;
  return t;
})();

/** CRC-32 (IEEE 802.3, as zlib's crc32), four bytes per step. */
export function crc32(bytes: Uint8Array, crc = 0): number {
  const [t0, t1, t2, t3] = CRC_T;
  let c = ~crc >>> 0, i = 0;
  if ((bytes.byteOffset & 3) === 0) {
    // whole little-endian words (every WebGPU platform is little-endian)
    const w = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2);
    for (let j = 0; j < w.length; j++) {
      c ^= w[j];
      c = t3[c & 0xff] ^ t2[(c >>> 8) & 0xff] ^ t1[(c >>> 16) & 0xff] ^ t0[c >>> 24];
    }
    i = w.length << 2;
  } else {
    for (const end = bytes.length & ~3; i < end; i += 4) {
      c ^= bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24);
      c = t3[c & 0xff] ^ t2[(c >>> 8) & 0xff] ^ t1[(c >>> 16) & 0xff] ^ t0[c >>> 24];
    }
  }
  for (; i < bytes.length; i++) c = t0[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
