#!/usr/bin/env bash
# Create .venv in the repository root (if missing) and install the whole stack into it.
# Idempotent: a stamp records what was installed, so a second run returns at once.
# The mmcv wheel is built once per machine and cached in ${VZOO_CACHE:-~/.cache/vzoo}/wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PY=$VENV/bin/python
CACHE=${VZOO_CACHE:-$HOME/.cache/vzoo}
STAMP=$VENV/.vzoo-installed
want=$(cat setup.cfg pyproject.toml scripts/install.sh scripts/build_mmcv.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
t0=$(date +%s)
say() { echo "[install $(( $(date +%s) - t0 ))s] $*"; }
if [ ! -x "$PY" ]; then
  say "creating $VENV"
  python3 -m venv "$VENV"
fi
say "setuptools (>=77 for torch 2.14, <81 keeps pkg_resources for mmcv and mmengine's mmdet::/mmseg:: configs)"
"$PY" -m pip install -q --disable-pip-version-check "setuptools>=77,<81" wheel ninja
say "torch 2.14.1 + torchvision 0.29.1 (about a minute)"
"$PY" -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
whl=$(bash scripts/build_mmcv.sh "$PY" "$CACHE/wheels" | tail -n 1)
say "mmcv from $whl"
"$PY" -m pip install -q --disable-pip-version-check "$whl"
say "vzoo (editable) with timm, mmengine, mmdet, mmseg, natten, albumentations and the test extras"
"$PY" -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[mm,test]"
echo "$want" > "$STAMP"
say "done"
