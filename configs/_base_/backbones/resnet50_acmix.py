# ResNet-50-ACmix (paper Table 3) as the downstream configs use it (a backbone base: see
# swin_acmix_t.py for how a config swaps it in): mmdet's ResNet-50 detection settings
# (stem and stage 1 frozen, BN in eval mode), which ResNetACmix takes as they are, with
# ACmix in place of every 3x3 convolution.
# Weights: the authors never released ResNet-ACmix ImageNet weights; train it with the
# official ResNet code (LeapLabTHU/ACmix) and put the file at the path below (converted
# on load). Or set init_cfg=None to train from scratch; then also frozen_stages=-1 and
# norm_eval=False, which only make sense on top of pretrained weights.
# From our ImageNet pretraining (configs/pretrain/resnet50_acmix_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/resnet50_acmix_in1k/epoch_100.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
backbone = dict(
    type='ResNetACmix',
    depth=50,
    num_stages=4,
    out_indices=(0, 1, 2, 3),
    frozen_stages=1,
    norm_cfg=dict(type='BN', requires_grad=True),
    norm_eval=True,
    style='pytorch',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/resnet50_acmix_imagenet.pth'))
