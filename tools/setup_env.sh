#!/usr/bin/env bash
# Create or reuse the Python environment of acmix_mm and print its python on stdout.
#
#   PY=$(bash tools/setup_env.sh)
#
# * An active virtualenv or conda env is used as it is, and its torch is kept (a CUDA
#   torch stays; mmcv's CUDA ops are then built when nvcc is present).
# * Otherwise .venv in the checkout is created or reused, with the CPU torch 2.13.0.
# * A second run only checks the stamp and the imports (seconds).
# All pins are in requirements.txt. The first run builds mmcv 2.1.0 from source: about
# 12 minutes on 2 cores (pip caches the wheel, so other environments reuse it).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { echo "[setup] $*" >&2; }

if [ -n "${VIRTUAL_ENV:-}" ]; then
  PY="$VIRTUAL_ENV/bin/python"
elif [ -n "${CONDA_PREFIX:-}" ] && [ -x "$CONDA_PREFIX/bin/python" ]; then
  PY="$CONDA_PREFIX/bin/python"
else
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    log "creating $ROOT/.venv"
    python3 -m venv "$ROOT/.venv" >&2
  fi
  PY="$ROOT/.venv/bin/python"
fi
PREFIX=$("$PY" -c 'import sys; print(sys.prefix)')
STAMP="$PREFIX/.acmix_mm_setup"
WANT=$(cat "$ROOT/requirements.txt" "$ROOT/tools/setup_env.sh" "$ROOT/setup.py" | sha1sum | cut -c1-40)
WANT="$WANT $ROOT"

imports_ok() {
  "$PY" - <<'PY' >/dev/null 2>&1
import mmcv.ops, mmdet, mmseg, acmix_mm  # noqa
PY
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && imports_ok; then
  echo "$PY"
  exit 0
fi

pin() { grep -E "^$1([=<>!~ ]|$)" "$ROOT/requirements.txt" | head -n 1; }
pip_install() { "$PY" -m pip install --disable-pip-version-check "$@" >&2; }

log "python: $PY"
pip_install "$(pin setuptools)" "$(pin wheel)" "$(pin ninja)"
if "$PY" -c 'import torch' >/dev/null 2>&1; then
  log "keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  log "installing $(pin torch)"
  pip_install "$(pin torch)"
fi
# Keep whatever torch is installed now through every later step.
CONSTRAINT=$(mktemp)
trap 'rm -f "$CONSTRAINT"' EXIT
"$PY" -c 'import torch; print("torch==" + torch.__version__)' > "$CONSTRAINT"

pip_install -c "$CONSTRAINT" "$(pin mmengine)" "$(pin numpy)" "$(pin opencv-python)"
if ! "$PY" -c 'import mmcv.ops' >/dev/null 2>&1; then
  export MMCV_WITH_OPS=1
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  if command -v nvcc >/dev/null 2>&1 && \
     "$PY" -c 'import sys, torch; sys.exit(torch.version.cuda is None)'; then
    export FORCE_CUDA=1
    log "building $(pin mmcv) with CUDA ops (torch $("$PY" -c 'import torch; print(torch.version.cuda)'))"
  else
    log "building $(pin mmcv) with CPU ops (about 12 minutes on 2 cores the first time)"
  fi
  pip_install -c "$CONSTRAINT" --no-build-isolation "$(pin mmcv)"
fi
grep -vE '^\s*(#|$)' "$ROOT/requirements.txt" | grep -vE '^(torch|mmcv)==' > "$CONSTRAINT.req"
pip_install -c "$CONSTRAINT" -r "$CONSTRAINT.req"
rm -f "$CONSTRAINT.req"
pip_install --no-deps --no-build-isolation -e "$ROOT"

if ! imports_ok; then
  log "the environment is installed but 'import mmcv.ops, mmdet, mmseg, acmix_mm' fails:"
  "$PY" -c 'import mmcv.ops, mmdet, mmseg, acmix_mm' >&2 || true
  exit 1
fi
echo "$WANT" > "$STAMP"
log "environment ready"
echo "$PY"
