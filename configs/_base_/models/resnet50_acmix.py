# The ResNet-50-ACmix backbone of the paper configs, defined once: mmdet's ResNet-50
# detection settings (stem and stage 1 frozen, BN in eval mode) with ACmix in place of
# every 3x3 convolution. Replaces any base backbone.
# Weights: the authors never released ResNet-ACmix ImageNet weights; train it with the
# official ResNet code (LeapLabTHU/ACmix) and put the file at the path below (converted
# on load). Or set init_cfg=None to train from scratch; then also frozen_stages=-1 and
# norm_eval=False, which only make sense on top of pretrained weights.
resnet50_acmix = dict(
    _delete_=True,
    type='ResNetACmix',
    depth=50,
    num_stages=4,
    out_indices=(0, 1, 2, 3),
    frozen_stages=1,
    norm_cfg=dict(type='BN', requires_grad=True),
    norm_eval=True,
    style='pytorch',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/resnet50_acmix_imagenet.pth'))
