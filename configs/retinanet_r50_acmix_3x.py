# RetinaNet ResNet-50-ACmix, 3x schedule (not in the paper): the 3x recipe of
# retinanet_pvt_t_3x.py (36 epochs, lr steps at 27 and 33, multi-scale training with the
# shorter side 640-800) with the model and SGD optimizer of retinanet_r50_acmix_1x.py.
# From our ImageNet pretraining (configs/pretrain/resnet50_acmix_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/resnet50_acmix_in1k/epoch_100.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = './retinanet_pvt_t_3x.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNetACmix',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/resnet50_acmix_imagenet.pth')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
# mmdet's RetinaNet R50 optimizer (retinanet_r50_1x.py) in place of PVT's AdamW.
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
