# Baseline: RetinaNet with mmdet's PVT-T (paper Table 4: 230 GFLOPs, 36.7 mAP at 1x).
# COCO 2017, 12 epochs, AdamW lr 1e-4, weight decay 1e-4, 8 GPUs x 2 images, 1333x800.
_base_ = [
    '_base_/models/retinanet_r50_fpn.py', '_base_/datasets/coco_detection.py',
    '_base_/schedules/schedule_1x.py', '_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        _delete_=True,
        type='PyramidVisionTransformer',
        num_layers=[2, 2, 2, 2],
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_tiny.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, weight_decay=0.0001))
