#!/usr/bin/env bash
# The main job on the bundled data, from a fresh clone: set up (or reuse) the
# environment, make the demo data, train with tools/train.py, evaluate with
# tools/test.py and paint the predictions on a demo image.
#   bash tools/demo.sh        RetinaNet PVT-ACmix-T, COCO bbox mAP (the main job)
#   bash tools/demo.sh seg    Semantic FPN PVT-ACmix-T, ADE20K-style mIoU
#   bash tools/demo.sh cls    PVT-ACmix-T ImageNet-style classification, top-1
set -euo pipefail
cd "$(dirname "$0")/.."
TASK=${1:-det}
case "$TASK" in
  det) NAME=retinanet_pvt_acmix_t_demo; IMAGE=data/demo/coco/val2017/000001.jpg
       METRIC='coco/bbox_mAP: [0-9.]*.*bbox_mAP_l: [0-9.]*'
       KEY='coco/bbox_mAP: [0-9.]*'; UNIT=mAP ;;
  seg) NAME=sem_fpn_pvt_acmix_t_demo
       IMAGE=data/demo/ade/ADEChallengeData2016/images/validation/ADE_valid_00000001.jpg
       METRIC='aAcc: [0-9.]*  mIoU: [0-9.]*  mAcc: [0-9.]*'; KEY='mIoU: [0-9.]*'; UNIT=mIoU ;;
  cls) NAME=pvt_acmix_t_in1k_demo; IMAGE=data/demo/imagenet/val/circle/val_000000.jpg
       METRIC='accuracy/top1: [0-9.]*'; KEY=$METRIC; UNIT=top-1 ;;
  *) echo "usage: bash tools/demo.sh [det|seg|cls]" >&2; exit 2 ;;
esac
# Which set-up this run pays for (recorded below): mmcv built (no wheel cached),
# a new environment from the cached wheel, or an existing environment.
SETUP=second
if ! ls "${XDG_CACHE_HOME:-$HOME/.cache}"/acmix_mm/wheels/*/mmcv-*.whl >/dev/null 2>&1; then
  SETUP=first
elif [ -z "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] && [ ! -x .venv/bin/python ]; then
  SETUP=new_clone
fi
began=$(date +%s)
PY=$(bash tools/setup_env.sh)
set_up=$(date +%s)
# An existing environment set up again (requirements.txt, setup_env.sh or setup.py
# changed: setup_env.sh rewrote its stamp) is a reinstall, not a second run.
STAMP="$("$PY" -c 'import sys; print(sys.prefix)')/.acmix_mm_setup"
if [ "$SETUP" = second ] && [ "$(stat -c %Y "$STAMP" 2>/dev/null || echo 0)" -ge "$began" ]; then
  SETUP=reinstall
fi
CONFIG=configs/demo/$NAME.py
WORK_DIR=work_dirs/$NAME

"$PY" tools/make_demo_data.py --out data/demo
start=$(date +%s)
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
trained=$(date +%s)
CKPT=$(cat "$WORK_DIR/last_checkpoint")
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR/test" 2>&1 | tee "$WORK_DIR/test.log"
"$PY" tools/image_demo.py "$CONFIG" "$CKPT" "$IMAGE" --out-file "$WORK_DIR/prediction.jpg"

echo
echo "Training took $(( (trained - start) / 60 )) min $(( (trained - start) % 60 )) s."
echo "Metrics on the demo val split (tools/test.py):"
grep -o "$METRIC" "$WORK_DIR/test.log" | tail -n 1
echo "Predictions painted on a demo image: $WORK_DIR/prediction.jpg"

# What this run measured, as records under benchmarks/results/ (acmix_mm/records.py).
VALUE=$(grep -o "$KEY" "$WORK_DIR/test.log" | tail -n 1 | grep -o '[0-9.]*$')
RUN="bash tools/demo.sh${1:+ $1}"
"$PY" -m acmix_mm.records add demo "demo.$TASK.metric" "$VALUE" "$UNIT" \
  --label "$NAME: $UNIT on the demo val split" --command "$RUN"
"$PY" -m acmix_mm.records add demo "demo.$TASK.train_s" "$(( trained - start ))" s \
  --label "$NAME: training time" --command "$RUN"
"$PY" -m acmix_mm.records add demo "demo.$TASK.total_s" "$(( $(date +%s) - began ))" s \
  --label "$NAME: the whole command, set-up included" --command "$RUN"
"$PY" -m acmix_mm.records add setup "setup.$SETUP" "$(( set_up - began ))" s \
  --label "set-up ($SETUP run)" --command "$RUN"
