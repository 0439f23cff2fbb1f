// transformers' max_shard_size, on its own so the studio's page can check the field without the
// exporter (and the model code it pulls in) in its bundle.

/** transformers ≥ 5's save_pretrained default (4.x: "5GB"). */
export const DEFAULT_MAX_SHARD_SIZE = '50GB';

/** huggingface_hub's parse_size_to_int: "5GB" = 5·10⁹ bytes (KB/MB/GB/TB, decimal); a number is bytes. */
export function parseShardSize(size: string | number): number {
  if (typeof size === 'number') {
    if (!Number.isSafeInteger(size) || size <= 0) throw new Error(`max shard size must be a positive whole number of bytes, got ${size}`);
    return size;
  }
  const s = size.trim();
  if (/^\d+$/.test(s)) return parseShardSize(Number(s));
  const units: Record<string, number> = { KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12 };
  const unit = s.slice(-2).toUpperCase();
  const value = Number(s.slice(0, -2).trim());
  if (!(unit in units) || !s.slice(0, -2).trim() || !Number.isFinite(value) || value <= 0) {
    throw new Error(`max shard size "${size}" is not a size like "5GB", "500MB" or a number of bytes (units KB, MB, GB, TB, as transformers)`);
  }
  return Math.floor(value * units[unit]);
}
