#!/usr/bin/env bash
# MuJoCo Warp (warp-lang 1.18.0) to the lent GPU machine, which cannot reach a package index and
# takes at most 64 MiB of working tree per call; the wheel is 149 MB.
#
#   benchmarks/warp_transport.sh pack      # here, once: .gpu_warp/part1 and .gpu_warp/part2
#   benchmarks/warp_transport.sh unpack    # on the device, in each call that carries a part
#
# pack: downloads the wheel (pip, Python 3.12 manylinux), leaves out warp/bin/warp-clang.so
# (69 MB: Warp's compiler for CPU kernels; GPU kernels are built by NVRTC inside warp.so), packs
# the rest with xz -9 (78 MiB, from 303 MB unpacked; 3 minutes on the 2-core CPU) and splits it in
# two parts of at most 40 MiB, each in its own git-ignored folder so that a call can carry one.
# unpack: run in a call that carries .gpu_warp/part1 or .gpu_warp/part2: keeps the part in
# /tmp/warp_parts (which lasts while the machine stays warm, 30 s after a call), and once both
# are there, joins them into /tmp/site (the folder the other wheels go to). Exits 0 and says
# which part it still waits for until then.
#
# A lease with Warp (three calls back to back, each within 30 s of the last; the first also
# installs .whl into /tmp/site as benchmarks/speed_session.sh's header says):
#   1. carry [".whl", ".gpu_extra"]: phase H (or P) as planned;
#   2. carry [".gpu_warp/part1"]: `bash benchmarks/warp_transport.sh unpack` (seconds; with a
#      short phase of its own if there is one that needs no Warp);
#   3. carry [".gpu_warp/part2"]: `bash benchmarks/warp_transport.sh unpack && PYTHONPATH=/tmp/site:$PWD
#      python3 -m benchmarks.physics_backend --out=$OUT/physics_backend.json`.
# A cold machine in between loses /tmp: start again at the call that brings part 1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
WARP_SPEC=${WARP_SPEC:-warp-lang==1.18.0}
PART_BYTES=${PART_BYTES:-40m}

case "${1:-}" in
  pack)
    grep -qx '/.gpu_warp/' .git/info/exclude 2>/dev/null || echo '/.gpu_warp/' >> .git/info/exclude
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      -d "$work/wheel" "$WARP_SPEC"
    mkdir -p "$work/site"
    python3 -m zipfile -e "$work"/wheel/*.whl "$work/site"
    rm -f "$work/site/warp/bin/warp-clang.so"
    tar -C "$work/site" -cf - . | xz -9 -T0 > "$work/warp.tar.xz"
    split -b "$PART_BYTES" -d -a 1 "$work/warp.tar.xz" "$work/warp.tar.xz."
    parts=("$work"/warp.tar.xz.*)
    if [ "${#parts[@]}" -ne 2 ]; then
      echo "error: $WARP_SPEC packed into ${#parts[@]} parts of at most $PART_BYTES, not 2" >&2
      exit 1
    fi
    rm -rf .gpu_warp
    mkdir -p .gpu_warp/part1 .gpu_warp/part2
    mv "$work/warp.tar.xz.0" .gpu_warp/part1/
    mv "$work/warp.tar.xz.1" .gpu_warp/part2/
    (cd "$work" && sha256sum warp.tar.xz | sed 's#  .*#  warp.tar.xz#') > .gpu_warp/part2/SHA256
    du -sh .gpu_warp/part1 .gpu_warp/part2
    ;;
  unpack)
    mkdir -p /tmp/warp_parts /tmp/site
    for part in .gpu_warp/part1/warp.tar.xz.0 .gpu_warp/part2/warp.tar.xz.1 \
                .gpu_warp/part2/SHA256; do
      [ -f "$part" ] && cp "$part" /tmp/warp_parts/
    done
    for name in warp.tar.xz.0 warp.tar.xz.1 SHA256; do
      if [ ! -f "/tmp/warp_parts/$name" ]; then
        echo "warp_transport: waiting for $name (carry the .gpu_warp part that holds it)"
        exit 0
      fi
    done
    cat /tmp/warp_parts/warp.tar.xz.0 /tmp/warp_parts/warp.tar.xz.1 > /tmp/warp_parts/warp.tar.xz
    (cd /tmp/warp_parts && sha256sum -c --quiet SHA256)
    tar -C /tmp/site -xJf /tmp/warp_parts/warp.tar.xz
    echo "warp_transport: $(ls -d /tmp/site/warp_lang-*.dist-info | xargs basename) in /tmp/site"
    ;;
  *)
    echo "usage: $0 pack|unpack" >&2
    exit 2
    ;;
esac
