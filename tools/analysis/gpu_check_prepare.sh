#!/usr/bin/env bash
# Fill .gpu_check/ (git-ignored) with what tools/analysis/gpu_check.sh needs on a GPU
# machine that has torch, timm, numpy, opencv, matplotlib, rich, pyyaml, pillow, packaging
# and pytest but no network (docs/gpu.md):
#   .gpu_check/wheels/   mmcv 2.1.0 without its compiled ops (MMCV_WITH_OPS=0: pure Python,
#                        built here in seconds; the dist is named mmcv-lite, the package mmcv),
#                        mmengine 0.10.7 and the pure-Python packages they import that such
#                        an image lacks (addict, termcolor, yapf, platformdirs)
#   .gpu_check/LightViT/detection/lightvit.py                 official detection backbone
#   .gpu_check/image_classification_sota/lib/models/lightvit.py   official classifier at 36539b6
# Usage (from anywhere; needs the package index and the two official repositories):
#   LIGHTVIT_OFFICIAL=/path/to/LightViT LIGHTVIT_SOTA=/path/to/image_classification_sota \
#     tools/analysis/gpu_check_prepare.sh
# Without LIGHTVIT_OFFICIAL / LIGHTVIT_SOTA the two repositories are cloned from GitHub.
# PYTHON picks the interpreter that builds and downloads (default python3); the wheels are
# all py3-none-any, so any Python 3 builds the set for the GPU machine's Python 3.12.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$REPO/.gpu_check"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_prepare.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
rm -rf "$DEST"
mkdir -p "$DEST/wheels" "$DEST/LightViT/detection" "$DEST/image_classification_sota/lib/models"

# The official code: a file of each repository, nothing else.
OFFICIAL="${LIGHTVIT_OFFICIAL:-}"
if [ -z "$OFFICIAL" ]; then
  OFFICIAL="$WORK/LightViT"
  git clone -q --depth 1 https://github.com/hunto/LightViT "$OFFICIAL"
fi
cp "$OFFICIAL/detection/lightvit.py" "$DEST/LightViT/detection/lightvit.py"
SOTA="${LIGHTVIT_SOTA:-}"
if [ -z "$SOTA" ]; then
  SOTA="$WORK/image_classification_sota"
  git clone -q https://github.com/hunto/image_classification_sota "$SOTA"
fi
git -C "$SOTA" show 36539b6:lib/models/lightvit.py \
  > "$DEST/image_classification_sota/lib/models/lightvit.py"

# mmcv 2.1.0 without ops: its setup.py imports pkg_resources (setuptools < 81).
"$PY" -m venv "$WORK/venv"
PIP=("$WORK/venv/bin/python" -m pip -q)
"${PIP[@]}" install "setuptools>=64,<81" wheel
"${PIP[@]}" download --no-deps --no-binary :all: mmcv==2.1.0 -d "$WORK"
tar -xzf "$WORK/mmcv-2.1.0.tar.gz" -C "$WORK"
MMCV_WITH_OPS=0 "${PIP[@]}" wheel --no-build-isolation --no-deps --no-cache-dir \
  "$WORK/mmcv-2.1.0" -w "$DEST/wheels"

# The rest, as wheels for CPython 3.12 on manylinux x86_64 (all turn out py3-none-any).
"${PIP[@]}" download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$DEST/wheels" \
  mmengine==0.10.7 addict==2.4.0 termcolor==3.3.0 yapf==0.43.0 platformdirs==4.14.9

# Every wheel must be pure Python: a compiled one would be for this machine's Python.
if ls "$DEST/wheels"/*.whl | grep -v -- '-none-any\.whl$'; then
  echo "gpu_check_prepare: the wheels above are not pure Python" >&2
  exit 1
fi
ls -l "$DEST/wheels"
du -sh "$DEST"
