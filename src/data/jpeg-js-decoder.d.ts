// Types of jpeg-js's decoder module (the package only types its index, which also pulls the encoder).
declare module 'jpeg-js/lib/decoder.js' {
  export interface JpegDecodeOptions {
    useTArray?: boolean;
    colorTransform?: boolean;
    formatAsRGBA?: boolean;
    tolerantDecoding?: boolean;
    maxResolutionInMP?: number;
    maxMemoryUsageInMB?: number;
  }
  export default function decode(data: Uint8Array, opts?: JpegDecodeOptions): { width: number; height: number; data: Uint8Array; exifBuffer?: Uint8Array };
}
