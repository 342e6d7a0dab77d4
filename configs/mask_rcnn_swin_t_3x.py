# Baseline: Mask R-CNN with mmdet's Swin-T, 3x schedule (paper Table 4: 272 GFLOPs,
# 46.0 box mAP). Swin's recipe (mmdet's mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco):
# COCO 2017, 36 epochs, lr steps at 27 and 33, AdamW lr 1e-4, weight decay 0.05 (none on
# norms and position biases), 1000 warm-up iterations, 8 GPUs x 2 images, multi-scale
# training with random crops (DETR's augmentation).
_base_ = [
    '_base_/models/mask_rcnn_r50_fpn.py', '_base_/datasets/coco_instance_ms_crop.py',
    '_base_/schedules/schedule_swin_3x.py', '_base_/default_runtime.py',
    '_base_/models/swin.py'
]
model = dict(
    backbone={{_base_.swin_t}},
    neck=dict(in_channels=[96, 192, 384, 768]))
