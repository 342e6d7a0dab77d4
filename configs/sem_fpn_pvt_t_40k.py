# Baseline: Semantic FPN with mmdet's PVT-T on ADE20K (paper Table 2: 17M, 158 GFLOPs,
# 37.1 mIoU). PVT's recipe: AdamW lr 1e-4, weight decay 1e-4, poly schedule, 40k
# iterations, 8 GPUs x 2 images, 512x512 random resize-and-crop, short side 512 at test.
_base_ = [
    '_base_/models/fpn_r50.py', '_base_/datasets/ade20k.py',
    '_base_/schedules/schedule_40k.py', '_base_/seg_runtime.py', '_base_/models/pvt_t.py'
]
model = dict(
    backbone={{_base_.pvt_t}},
    neck=dict(in_channels=[64, 128, 320, 512]))
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, weight_decay=0.0001))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False)
]
