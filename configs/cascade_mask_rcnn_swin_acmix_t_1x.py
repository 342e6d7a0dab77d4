# Cascade Mask R-CNN with Swin-ACmix-T, 1x schedule (not in the paper): the 3x config
# with Swin's 1x recipe, that of mask_rcnn_swin_t_1x.py (mmdet's; mmdet ships no cascade
# one): 12 epochs, lr steps at 8 and 11, single-scale 1333x800 training; the same
# optimizer and warm-up.
# From our ImageNet pretraining (configs/pretrain/swin_acmix_t_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/swin_acmix_t_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = './cascade_mask_rcnn_swin_acmix_t_3x.py'
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1)
]
