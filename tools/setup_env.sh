#!/usr/bin/env bash
# Create or reuse the Python environment of acmix_mm and print its python on stdout.
#
#   PY=$(bash tools/setup_env.sh)
#
# * An active virtualenv or conda env is used as it is, and its torch is kept (a CUDA
#   torch stays; with a visible GPU and nvcc, mmcv's CUDA ops are built too).
# * Otherwise .venv in the checkout is created or reused, with the pinned torch and
#   torchvision (mmpretrain imports torchvision).
# * A second run only checks the stamp and the imports (seconds).
# All pins are in requirements.txt. The first run builds mmcv 2.1.0 from its sdist:
# 20-25 minutes on 2 cores. The wheel is kept per torch version under
# ~/.cache/acmix_mm/wheels (pip's own cache would hand a wheel built against another
# torch to this one), so other environments with the same torch reuse it.
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
import mmcv.ops, mmdet, mmseg, mmpretrain, acmix_mm  # noqa
PY
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && imports_ok; then
  echo "$PY"
  exit 0
fi

pin() { grep -E "^$1([=<>!~ ]|$)" "$ROOT/requirements.txt" | head -n 1; }
pip_install() { "$PY" -m pip install --disable-pip-version-check "$@" >&2; }

# mmcv 2.1.0 from its sdist, with its ops, as a wheel kept per torch version. Its
# setup.py asks for C++17; torch >= 2.14's headers need the standard torch's own
# extension builder uses (C++20), so that flag is put in its place.
install_mmcv() {
  local mmcv_pin torch_tag cxx_std cache src
  mmcv_pin=$(pin mmcv)
  export MMCV_WITH_OPS=1
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  torch_tag=$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')
  if command -v nvcc >/dev/null 2>&1 && "$PY" -c \
      'import sys, torch; sys.exit(not (torch.version.cuda and torch.cuda.is_available()))'
  then
    export FORCE_CUDA=1
    torch_tag="${torch_tag}-cuda"
    log "building $mmcv_pin with CUDA ops"
  else
    torch_tag="${torch_tag}-cpu"
    log "building $mmcv_pin with CPU ops (20-25 minutes on 2 cores the first time)"
  fi
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/acmix_mm/wheels/${mmcv_pin/==/-}-torch$torch_tag"
  if ! ls "$cache"/mmcv-*.whl >/dev/null 2>&1; then
    src=$(mktemp -d)
    "$PY" -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
      "$mmcv_pin" -d "$src" >&2
    tar -xzf "$src"/mmcv-*.tar.gz -C "$src"
    cxx_std=$("$PY" - <<'PY'
import inspect, re
from torch.utils import cpp_extension
found = re.findall(r'-std=c\+\+(\d+)', inspect.getsource(cpp_extension))
print(max(found, key=int) if found else '17')
PY
)
    sed -i "s/-std=c++17/-std=c++$cxx_std/g" "$src"/mmcv-*/setup.py
    mkdir -p "$cache"
    (cd "$src"/mmcv-*/ && "$PY" -m pip wheel --disable-pip-version-check \
      --no-build-isolation --no-deps . -w "$cache.partial" >&2)
    mv "$cache.partial"/mmcv-*.whl "$cache"/ && rm -rf "$cache.partial" "$src"
  fi
  pip_install -c "$CONSTRAINT" --no-deps "$cache"/mmcv-*.whl
  pip_install -c "$CONSTRAINT" "$mmcv_pin"  # its dependencies (addict, yapf, ...)
}

log "python: $PY"
pip_install "$(pin setuptools)" "$(pin wheel)" "$(pin ninja)"
if "$PY" -c 'import torch' >/dev/null 2>&1; then
  log "keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
  if ! "$PY" -c 'import torchvision' >/dev/null 2>&1; then
    log "installing the torchvision that matches it"
    TORCH_NOW=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
    pip_install "torch==$TORCH_NOW" torchvision || {
      log "no torchvision found for torch $TORCH_NOW: install the matching one (see"
      log "https://pytorch.org/get-started/previous-versions/), then run this again"
      exit 1; }
  fi
else
  log "installing $(pin torch) $(pin torchvision)"
  pip_install "$(pin torch)" "$(pin torchvision)"
fi
# Keep whatever torch is installed now through every later step.
CONSTRAINT=$(mktemp)
trap 'rm -f "$CONSTRAINT"' EXIT
"$PY" -c 'import torch; print("torch==" + torch.__version__)' > "$CONSTRAINT"

pip_install -c "$CONSTRAINT" "$(pin mmengine)" "$(pin numpy)" "$(pin opencv-python)"
if ! "$PY" -c 'import mmcv.ops' >/dev/null 2>&1; then
  install_mmcv
fi
grep -vE '^\s*(#|$)' "$ROOT/requirements.txt" | grep -vE '^(torch|torchvision|mmcv)==' > "$CONSTRAINT.req"
pip_install -c "$CONSTRAINT" -r "$CONSTRAINT.req"
rm -f "$CONSTRAINT.req"
pip_install --no-deps --no-build-isolation -e "$ROOT"

if ! imports_ok; then
  log "the environment is installed but 'import mmcv.ops, mmdet, mmseg, mmpretrain, acmix_mm' fails:"
  "$PY" -c 'import mmcv.ops, mmdet, mmseg, mmpretrain, acmix_mm' >&2 || true
  exit 1
fi
echo "$WANT" > "$STAMP"
log "environment ready"
echo "$PY"
