# RetinaNet ResNet-50-ACmix, 3x schedule (not in the paper): 36 epochs, lr steps at 27
# and 33, multi-scale training (shorter side 640-800) as retinanet_pvt_t_3x.py;
# otherwise the 1x recipe (SGD lr 0.01).
# From our ImageNet pretraining (configs/pretrain/resnet50_acmix_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/resnet50_acmix_in1k/epoch_100.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = './retinanet_r50_acmix_1x.py'
train_pipeline = [
    dict(type='LoadImageFromFile'),
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
