# Baseline: RetinaNet with patchwise SAN-19 (paper Table 3: 229 GFLOPs, 38.2 mAP at 1x):
# the ResNet-50 RetinaNet recipe (mmdet's, SGD, 12 epochs), only the backbone differs:
# SAN with mmdet's ResNet detection settings (stem and first stage frozen, BN in eval
# mode), 256/512/1024/2048 channels at strides 4-32 like ResNet-50.
# Weights: the official SAN-19 patchwise ImageNet checkpoint (hszhao/SAN, Google Drive
# link in its README), put at the path below; converted on load. Set init_cfg=None (and
# frozen_stages=-1, norm_eval=False) to train from scratch.
_base_ = './retinanet_r50_1x.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SAN',
        depth=19,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/san19_patchwise_imagenet.pth')))
