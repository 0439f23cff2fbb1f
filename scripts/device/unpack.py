#!/usr/bin/env python3
"""Unpack the carried folder of the real-GPU check with nothing but Python's standard library
(the device machine has no Node and may lack xz, ar or dpkg):
  python3 scripts/device/unpack.py PACKDIR WORKDIR
node.xz -> WORKDIR/node (executable); bench.tar.xz -> WORKDIR/bench/; the libvulkan1 .deb ->
WORKDIR/vulkan/ (its data.tar.* unpacked). Prints the library folder to put on LD_LIBRARY_PATH."""
import glob
import io
import lzma
import os
import shutil
import sys
import tarfile


def ar_members(path):
    """The members of an ar archive (a .deb): [(name, bytes)]."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"!<arch>\n"):
        raise SystemExit(f"{path}: not an ar archive (.deb)")
    off, out = 8, []
    while off + 60 <= len(data):
        hdr = data[off:off + 60]
        name = hdr[:16].decode().strip().rstrip("/")
        size = int(hdr[48:58].decode().strip())
        out.append((name, data[off + 60:off + 60 + size]))
        off += 60 + size + (size & 1)
    return out


def main():
    pack, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    with lzma.open(os.path.join(pack, "node.xz")) as src, open(os.path.join(work, "node"), "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.chmod(os.path.join(work, "node"), 0o755)
    with tarfile.open(os.path.join(pack, "bench.tar.xz"), "r:xz") as t:
        t.extractall(work)
    debs = glob.glob(os.path.join(pack, "libvulkan1_*.deb"))
    if not debs:
        raise SystemExit(f"{pack}: no libvulkan1_*.deb")
    for name, blob in ar_members(debs[0]):
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise SystemExit(f"{debs[0]}: {name} is zstd-compressed; Python cannot unpack it without zstandard")
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as t:
                t.extractall(os.path.join(work, "vulkan"))
    libs = glob.glob(os.path.join(work, "vulkan", "usr", "lib", "*", "libvulkan.so.1"))
    if not libs:
        raise SystemExit("libvulkan.so.1 not found in the .deb")
    print(os.path.dirname(libs[0]))


if __name__ == "__main__":
    main()
