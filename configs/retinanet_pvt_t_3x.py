# Baseline: RetinaNet PVT-T, 3x schedule (paper Table 4: 230 GFLOPs, 39.4 mAP): 36 epochs,
# lr steps at 27 and 33, multi-scale training (shorter side 640-800) as in PVT's and
# Swin's 3x recipes; otherwise the 1x recipe. mmdet ships no PVT 3x config; this is the
# one place of the RetinaNet 3x recipe, which the other RetinaNet 3x configs inherit.
_base_ = './retinanet_pvt_t_1x.py'
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=[(1333, 640), (1333, 800)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33],
         gamma=0.1)
]
