# RetinaNet with ResNet-50-ACmix (paper Table 3: 230 GFLOPs, 38.3 mAP at 1x): the
# baseline's recipe, only the backbone differs: mmdet's ResNet-50 detection settings
# (stem and stage 1 frozen, BN in eval mode), which ResNetACmix takes as they are, with
# ACmix in place of every 3x3 convolution.
# Weights: the authors never released ResNet-ACmix ImageNet weights; train it with the
# official ResNet code (LeapLabTHU/ACmix) and put the file at the path below (converted
# on load). Or set init_cfg=None to train from scratch; then also frozen_stages=-1 and
# norm_eval=False, which only make sense on top of pretrained weights.
# From our ImageNet pretraining (configs/pretrain/resnet50_acmix_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/resnet50_acmix_in1k/epoch_100.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = './retinanet_r50_1x.py'
model = dict(
    backbone=dict(
        type='ResNetACmix',
        init_cfg=dict(checkpoint='checkpoints/resnet50_acmix_imagenet.pth')))
