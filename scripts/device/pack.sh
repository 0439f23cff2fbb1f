#!/usr/bin/env bash
# Build the folder the real-GPU check carries to a machine without Node (scripts/device/run.sh):
#   bash scripts/device/pack.sh [OUTDIR]          (default out/device, gitignored; must stay < 64 MiB)
# node.xz        this machine's Node binary, xz -9
# bench.tar.xz   the bench bundled by esbuild (WGSL and the tokenizer inlined) + dawn.node + ORT's wasm
# libvulkan1_*.deb  Debian's Vulkan loader (apt-get download; or LIBVULKAN_DEB=path)
# MANIFEST       sizes and sha256 of the above
set -euo pipefail
cd "$(dirname "$0")/../.."
OUTDIR=${1:-out/device}
CACHE=out/device-cache
mkdir -p "$CACHE"
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"

NODE_BIN=$(node -p process.execPath)
NODE_XZ="$CACHE/node-$(node -p process.version)-$(uname -m).xz"
if [ ! -s "$NODE_XZ" ] || [ "$NODE_BIN" -nt "$NODE_XZ" ]; then
  echo "compressing $NODE_BIN ($(stat -c %s "$NODE_BIN") bytes) ..."
  xz -T0 -9 -c "$NODE_BIN" > "$NODE_XZ.tmp" && mv "$NODE_XZ.tmp" "$NODE_XZ"
fi
cp "$NODE_XZ" "$OUTDIR/node.xz"

node scripts/device/bundle.mjs "$OUTDIR/bench"
tar -C "$OUTDIR" -cf - bench | xz -T0 -9 > "$OUTDIR/bench.tar.xz"
rm -rf "$OUTDIR/bench"

if [ -n "${LIBVULKAN_DEB:-}" ]; then
  cp "$LIBVULKAN_DEB" "$OUTDIR/"
else
  (cd "$OUTDIR" && apt-get download libvulkan1 2>/dev/null) || { echo "apt-get download libvulkan1 failed: set LIBVULKAN_DEB=path/to/libvulkan1_*.deb" >&2; exit 1; }
fi

(cd "$OUTDIR" && for f in node.xz bench.tar.xz libvulkan1_*.deb; do printf '%s %s %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-16)" "$f"; done) > "$OUTDIR/MANIFEST"
TOTAL=$(du -cb "$OUTDIR"/* | tail -1 | cut -f1)
cat "$OUTDIR/MANIFEST"
echo "total $TOTAL bytes ($(awk "BEGIN { printf \"%.1f\", $TOTAL / 1048576 }") MiB) in $OUTDIR"
if [ "$TOTAL" -ge $((64 * 1024 * 1024)) ]; then echo "pack is over 64 MiB" >&2; exit 1; fi
