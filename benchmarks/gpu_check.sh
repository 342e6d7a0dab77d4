#!/usr/bin/env bash
# The GPU check of acmix_mm: from a bare Python 3.12 with a CUDA torch and Triton but no
# OpenMMLab package and no network, in under 10 minutes. See docs/get_started.md.
#
#   bash benchmarks/gpu_check.sh --prepare       # here, with network: wheels into .gpu_wheels/
#   bash benchmarks/gpu_check.sh                 # on the GPU machine: install, build, check
#   bash benchmarks/gpu_check.sh --cpu-dry-run   # here: the same checks on the CPU, tiny
#
# On the GPU machine it installs the carried wheels into a scratch folder (--no-deps:
# what the machine already has stays), builds the C++ extension in place, and runs
# benchmarks/gpu_check.py (each backbone on CUDA against the CPU, the Triton kernels
# against the unfold definitions at real sizes, torch.compile, float16 autocast training
# steps), benchmarks/native_ops.py on CUDA and benchmarks/train_step.py with and without
# --amp. Records go to $ACMIX_MM_RECORDS, else $OUT where that is set (the device tool's
# folder that comes back), else benchmarks/results. Exit status: 1 if any step failed
# (all steps run).
#
# mmcv: no mmcv 2.1.0 wheel exists for this torch, and building its ops takes minutes
# that the check does not have. The backbones use only mmcv's Python parts (mmcv.cnn),
# so mmcv-lite (mmcv without compiled ops, the same version) is carried; mmdet imports
# mmcv.ops at start-up (NMS and RoI layers for its heads), so a stand-in mmcv._ext
# whose every function raises is put beside it: an mmcv op that is called fails loudly.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1  # setup.py names its sources relative to the checkout
PY=${PYTHON:-python3}
WHEELS="$ROOT/.gpu_wheels"
SITE=${ACMIX_MM_SITE:-/tmp/acmix_mm_site}
MODE=${1:-run}

# The OpenMMLab packages at requirements.txt's pins, and what they import at start-up
# that the GPU image lacks (it has numpy, scipy, matplotlib, opencv-python-headless,
# rich, regex, einops, six, tqdm, pillow, pyyaml, packaging, click, markdown, zipp), at
# the versions of the tested environment. pycocotools, shapely and wcwidth are binary
# (cp312 wheels); 11 MB in all.
pin() { grep -E "^$1==" "$ROOT/requirements.txt" | head -n 1; }
PACKAGES=("$(pin mmengine)" "mmcv-lite==$(pin mmcv | cut -d= -f3)" "$(pin mmdet)"
          "$(pin mmsegmentation)" "$(pin mmpretrain)" addict==2.4.0 termcolor==3.3.0
          yapf==0.43.0 platformdirs==4.14.9 terminaltables==3.1.10 pycocotools==2.0.11
          shapely==2.2.0 ftfy==6.3.1 wcwidth==0.9.4 model-index==0.1.11 ordered-set==4.1.0
          importlib-metadata==10.2.0 lazy-importer==0.1.0)

if [ "$MODE" = --prepare ]; then
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
  "$PY" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp "${platforms[@]}" -d "$WHEELS" \
    "${PACKAGES[@]}" || exit 1
  du -sh "$WHEELS"
  echo "carry .gpu_wheels (ignored by git) with the working tree, then run:"
  echo "  bash benchmarks/gpu_check.sh"
  exit 0
fi

# All steps together stay within BUDGET seconds (the device tool allows 600 a command):
# each step gets its own limit or what is left, whichever is less.
BUDGET=${GPU_CHECK_BUDGET:-570}
failed=()
step() {  # step NAME LIMIT COMMAND...: run, time and note a failure
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  if [ $((BUDGET - SECONDS)) -lt "$limit" ]; then limit=$((BUDGET - SECONDS)); fi
  if [ "$limit" -lt 10 ]; then
    echo "== $name: not run, out of time"; failed+=("$name"); return
  fi
  echo "== $name (at most $limit s)"
  if ! timeout "$limit" "$@"; then failed+=("$name"); fi
  echo "== $name: $((SECONDS - start)) s"
}

if [ "$MODE" = --cpu-dry-run ]; then
  # This environment as it is (OpenMMLab installed, extension built); the Triton
  # kernels under the interpreter; records into a scratch folder unless one is named.
  export TRITON_INTERPRET=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  export ACMIX_MM_RECORDS=${ACMIX_MM_RECORDS:-$(mktemp -d)}
  BUDGET=${GPU_CHECK_BUDGET:-1200}  # the interpreter and 2 cores are slow
  step gpu_check 600 "$PY" "$ROOT/benchmarks/gpu_check.py" --device cpu --dry-run \
    "${@:2}"
  step native_ops 300 "$PY" "$ROOT/benchmarks/native_ops.py" --device cpu \
    --parts resnet-layer --cases 16:24x40 --repeat 1
  for amp in "" --amp; do
    step "train_step$amp" 300 "$PY" "$ROOT/benchmarks/train_step.py" --device cpu \
      --size 128 160 --repeat 1 --pairs resnet $amp
  done
elif [ "$MODE" = run ]; then
  export ACMIX_MM_RECORDS=${ACMIX_MM_RECORDS:-${OUT:-$ROOT/benchmarks/results}}
  # The whole log into the device tool's folder too (it returns only the output's tail).
  if [ -n "${OUT:-}" ]; then exec > >(tee "$OUT/gpu_check.log") 2>&1; fi
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || {
    echo "no wheels in $WHEELS: run 'bash benchmarks/gpu_check.sh --prepare' where pip" \
         "reaches the index, and carry .gpu_wheels"; exit 1; }
  "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl || exit 1
  cat >"$SITE/mmcv/_ext.py" <<'EOF'
"""Stand-in for mmcv's compiled ops (mmcv-lite has none; benchmarks/gpu_check.sh)."""


def __getattr__(name):
    if name.startswith('_'):
        raise AttributeError(name)

    def missing(*args, **kwargs):
        raise NotImplementedError(f'mmcv op {name}: mmcv-lite has no compiled ops')

    return missing
EOF
  export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -c 'import torch, triton; print("torch", torch.__version__, "triton",
triton.__version__, torch.cuda.get_device_name(0))' || exit 1
  # The C++ CPU operators, built in place (the CPU side of the comparisons).
  step build 180 env MAX_JOBS="$(nproc)" "$PY" "$ROOT/setup.py" -q build_ext --inplace
  step imports 60 "$PY" -c 'import acmix_mm, mmdet.models, mmseg.models, mmpretrain.models
from acmix_mm import ops; print(ops.native_status())'
  step gpu_check 240 "$PY" "$ROOT/benchmarks/gpu_check.py" --device cuda
  step native_ops 90 "$PY" "$ROOT/benchmarks/native_ops.py" --device cuda
  for amp in "" --amp; do
    step "train_step$amp" 120 "$PY" "$ROOT/benchmarks/train_step.py" --device cuda $amp
  done
else
  echo "usage: bash benchmarks/gpu_check.sh [--prepare | --cpu-dry-run [gpu_check.py options]]"
  exit 2
fi
echo "records: $ACMIX_MM_RECORDS"
if [ ${#failed[@]} -gt 0 ]; then echo "failed: ${failed[*]}"; exit 1; fi
echo "all steps passed"
