# Baseline: RetinaNet with mmdet's PVT-T (paper Table 4: 230 GFLOPs, 36.7 mAP at 1x).
# COCO 2017, 12 epochs, AdamW lr 1e-4, weight decay 1e-4, 8 GPUs x 2 images, 1333x800.
_base_ = [
    '_base_/models/retinanet_r50_fpn.py', '_base_/datasets/coco_detection.py',
    '_base_/schedules/schedule_1x.py', '_base_/default_runtime.py', '_base_/models/pvt_t.py'
]
model = dict(
    backbone={{_base_.pvt_t}},
    neck=dict(in_channels=[64, 128, 320, 512]))
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, weight_decay=0.0001))
