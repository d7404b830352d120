#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv at the repository root.
#
# What it installs: torch + torchvision (default torch==2.14.1 torchvision==0.29.1; set
# LIGHTVIT_TORCH to another pip requirement string, e.g. a CUDA build you bring, or to "skip"
# when the venv already holds the torch you want), mmcv 2.1.0 built from source with its
# C++ ops (the wheel is kept in a cache keyed by torch version, Python and platform, so it is
# built once per machine), mmengine, mmdet 3.3.0, mmsegmentation 1.2.2, mmpretrain 1.2.0 and
# this package in editable mode with its test extras.
#
# Environment variables:
#   LIGHTVIT_VENV        venv folder (default: <repo>/.venv)
#   LIGHTVIT_PYTHON      interpreter used to create the venv (default: python3)
#   LIGHTVIT_TORCH       torch requirement(s) (default: "torch==2.14.1 torchvision==0.29.1")
#   LIGHTVIT_WHEEL_CACHE where built mmcv wheels are kept (default: ~/.cache/lightvit_mm/wheels)
#   MAX_JOBS             parallel compile jobs for mmcv (default: number of cores)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LIGHTVIT_VENV:-$ROOT/.venv}"
PY_BOOT="${LIGHTVIT_PYTHON:-python3}"
TORCH_REQ="${LIGHTVIT_TORCH:-torch==2.14.1 torchvision==0.29.1}"
CACHE="${LIGHTVIT_WHEEL_CACHE:-$HOME/.cache/lightvit_mm/wheels}"
MMCV_VERSION=2.1.0
MM_REQS=(mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 ftfy regex mmpretrain==1.2.0)

log() { printf '[setup] %s\n' "$*"; }
start=$(date +%s)

# A stamp records what the last successful run installed; when nothing changed and the
# stack still imports, the run is a no-op.
stamp_key() {
  cat "$ROOT/tools/setup_env.sh" "$ROOT/setup.py" "$ROOT/pyproject.toml"
  echo "$TORCH_REQ"
}
STAMP="$VENV/.lightvit_setup_stamp"
if [[ -x "$VENV/bin/python" && -f "$STAMP" ]] &&
   [[ "$(stamp_key | sha256sum | cut -d' ' -f1)" == "$(cat "$STAMP")" ]] &&
   "$VENV/bin/python" -c 'import mmcv.ops, mmdet, mmseg, mmpretrain, lightvit_mm' 2>/dev/null; then
  log "environment in $VENV is up to date ($(( $(date +%s) - start ))s)"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  "$PY_BOOT" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

# setuptools: torch 2.14 wants >= 77; mmcv 2.1.0's setup.py imports pkg_resources (< 81).
"${PIP[@]}" --upgrade pip wheel 'setuptools>=77,<81' ninja

if [[ "$TORCH_REQ" != "skip" ]]; then
  log "installing $TORCH_REQ"
  # shellcheck disable=SC2086
  "${PIP[@]}" $TORCH_REQ
fi

TORCH_VER=$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')
PY_TAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
PLAT=$("$PY" -c 'import sysconfig; print(sysconfig.get_platform().replace("-", "_"))')
CUDA_TAG=$("$PY" -c 'import torch; print("cu" + torch.version.cuda.replace(".", "") if torch.cuda.is_available() else "cpu")')
KEY="torch${TORCH_VER}-${PY_TAG}-${PLAT}-${CUDA_TAG}"
WHEEL_DIR="$CACHE/$KEY"
mkdir -p "$WHEEL_DIR"

if ! ls "$WHEEL_DIR"/mmcv-${MMCV_VERSION}-*.whl >/dev/null 2>&1; then
  log "building mmcv ${MMCV_VERSION} with C++ ops for $KEY (about 13 minutes on 2 cores)"
  BUILD=$(mktemp -d)
  trap 'rm -rf "$BUILD"' EXIT
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: --no-build-isolation \
    "mmcv==${MMCV_VERSION}" -d "$BUILD"
  tar -xzf "$BUILD"/mmcv-${MMCV_VERSION}.tar.gz -C "$BUILD"
  # torch >= 2.x headers need C++20; mmcv 2.1.0 hard-codes -std=c++17.
  sed -i 's/-std=c++17/-std=c++20/g' "$BUILD/mmcv-${MMCV_VERSION}/setup.py"
  "${PIP[@]}" -r "$BUILD/mmcv-${MMCV_VERSION}/requirements/runtime.txt"
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PY" -m pip wheel --disable-pip-version-check \
    --no-build-isolation --no-deps --no-cache-dir "$BUILD/mmcv-${MMCV_VERSION}" -w "$BUILD/dist"
  # Move into the cache only once complete, so an interrupted build leaves no half wheel.
  cp "$BUILD"/dist/mmcv-*.whl "$WHEEL_DIR/.tmp.whl"
  mv "$WHEEL_DIR/.tmp.whl" "$WHEEL_DIR/$(basename "$BUILD"/dist/mmcv-*.whl)"
fi

log "installing mmcv from $WHEEL_DIR and the OpenMMLab stack"
"${PIP[@]}" --no-cache-dir "$WHEEL_DIR"/mmcv-${MMCV_VERSION}-*.whl "${MM_REQS[@]}"
"${PIP[@]}" -e "$ROOT[tests,deploy]"

"$PY" -c 'import mmcv.ops, mmdet, mmseg, mmpretrain, lightvit_mm'
stamp_key | sha256sum | cut -d' ' -f1 > "$STAMP"
log "done in $(( $(date +%s) - start ))s"
