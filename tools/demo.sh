#!/usr/bin/env bash
# The main job on the bundled data, from a fresh clone:
#   set up (or reuse) the environment, make the demo data, train RetinaNet PVT-ACmix-T
#   with tools/train.py, evaluate COCO bbox mAP with tools/test.py, and paint the
#   detections on a demo image.
#   bash tools/demo.sh            (outputs under work_dirs/demo_retinanet_pvt_acmix_t/)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash tools/setup_env.sh)
CONFIG=configs/demo/retinanet_pvt_acmix_t_demo.py
WORK_DIR=work_dirs/demo_retinanet_pvt_acmix_t

"$PY" tools/make_demo_data.py --out data/demo
start=$(date +%s)
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
trained=$(date +%s)
CKPT=$(cat "$WORK_DIR/last_checkpoint")
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR/test" 2>&1 | tee "$WORK_DIR/test.log"
"$PY" tools/image_demo.py "$CONFIG" "$CKPT" data/demo/coco/val2017/000001.jpg \
    --out-file "$WORK_DIR/detections_000001.jpg"

echo
echo "Training took $(( (trained - start) / 60 )) min $(( (trained - start) % 60 )) s."
echo "COCO bbox metrics on the demo val split (tools/test.py):"
grep -o 'coco/bbox_mAP: [0-9.]*.*bbox_mAP_l: [0-9.]*' "$WORK_DIR/test.log" | tail -n 1
echo "Detections painted on a demo image: $WORK_DIR/detections_000001.jpg"
