#!/usr/bin/env bash
# Build the mmcv 2.1.0 wheel (with its C++ ops) once and keep it in a cache outside the repository.
#
# Why this exists: mmdet 3.3.0 and mmseg 1.2.2 accept only mmcv < 2.2, and mmcv 2.1.0 ships no wheel
# for torch 2.14. Its sdist compiles ~100 C++ files; torch 2.14's headers need C++20 while mmcv's
# setup.py asks for c++14/c++17, so we patch the flag. It must see the installed torch, hence
# --no-build-isolation. On 2 cores this takes about 12 minutes, once per machine.
#
# usage: scripts/build_mmcv.sh PYTHON CACHE_DIR   (prints the wheel's path on its last line)
set -euo pipefail
PY=$(cd "$(dirname "${1:?python}")" && pwd)/$(basename "$1")   # absolute, symlink kept (a venv)
CACHE=${2:?cache dir}
VERSION=2.1.0
mkdir -p "$CACHE"
whl=$(ls "$CACHE"/mmcv-$VERSION-*.whl 2>/dev/null | head -n 1 || true)
if [ -n "$whl" ]; then
  echo "[mmcv] cached wheel: $whl" >&2
  echo "$whl"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "[mmcv] no cached wheel in $CACHE: building mmcv $VERSION from source (about 12 min on 2 cores; only once per machine)" >&2
echo "[mmcv] step 1/3: fetching the source distribution" >&2
"$PY" -m pip download --quiet --no-deps --no-binary mmcv --no-build-isolation "mmcv==$VERSION" -d "$work" >&2
tar -xzf "$work"/mmcv-$VERSION.tar.gz -C "$work"
src="$work/mmcv-$VERSION"
echo "[mmcv] step 2/3: patching setup.py for C++20 (torch 2.14 headers require it)" >&2
sed -i -e 's/c++14/c++20/g' -e 's/c++17/c++20/g' "$src/setup.py"
echo "[mmcv] step 3/3: compiling the C++ ops with MMCV_WITH_OPS=1 (progress: one line per compiled file)" >&2
start=$(date +%s)
log="$work/build.log"
( cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" setup.py bdist_wheel -d "$work/dist" ) > "$log" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
  sleep 30
  n=$(grep -cE '^\[[0-9]+/[0-9]+\]' "$log" || true)
  echo "[mmcv]   $(( $(date +%s) - start )) s: $n files compiled; last: $(grep -E '^\[[0-9]+/[0-9]+\]' "$log" | tail -n 1 | cut -c1-60)" >&2
done
if ! wait "$pid"; then
  echo "[mmcv] build failed; the end of its log:" >&2
  tail -n 60 "$log" >&2
  exit 1
fi
built=$(ls "$work"/dist/mmcv-$VERSION-*.whl)
cp "$built" "$CACHE/"
echo "[mmcv] built in $(( $(date +%s) - start )) s, cached at $CACHE/$(basename "$built")" >&2
echo "$CACHE/$(basename "$built")"
