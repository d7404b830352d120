#!/usr/bin/env bash
# LightViT's GPU check in one call (tools/analysis/gpu_check.py; docs/gpu.md):
#   tools/analysis/gpu_check.sh OUT_DIR [gpu_check.py options, e.g. --device cpu]
# Where mmengine cannot be imported and .gpu_check/wheels/ holds wheels (made by
# tools/analysis/gpu_check_prepare.sh), they are installed into a fresh folder first,
# without network or dependencies, and put on PYTHONPATH. PYTHON picks the interpreter
# (default python3).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR [gpu_check.py options]" >&2; exit 2; }
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$1"; shift
PY="${PYTHON:-python3}"
WHEELS="$REPO/.gpu_check/wheels"
if ! "$PY" -c 'import mmengine, mmcv' 2>/dev/null; then
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "mmengine/mmcv are not installed and $WHEELS has no wheels:" \
      "run tools/analysis/gpu_check_prepare.sh (docs/gpu.md)" >&2
    exit 1
  fi
  SITE="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_site.XXXXXX")"
  trap 'rm -rf "$SITE"' EXIT
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
    "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" "$REPO/tools/analysis/gpu_check.py" --out "$OUT" "$@"
