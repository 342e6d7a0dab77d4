# SAN-19 backbones of the paper configs (Table 3), defined once: patchwise SAN and
# SAN-ACmix with mmdet's ResNet detection settings (stem and first stage frozen, BN in
# eval mode), 256/512/1024/2048 channels at strides 4-32 like ResNet-50. Each replaces
# any base backbone.
# Weights: the official SAN-19 patchwise ImageNet checkpoint (hszhao/SAN, Google Drive
# link in its README), put at the path below; converted on load. The authors never
# released SAN-ACmix ImageNet weights: SAN-ACmix starts from the same SAN weights with
# (alpha, beta) = (1, 0), i.e. exactly the pretrained SAN at step 0, and learns its
# convolution paths during fine-tuning. Set init_cfg=None (and frozen_stages=-1,
# norm_eval=False) to train from scratch.
san19 = dict(
    _delete_=True,
    type='SAN',
    depth=19,
    out_indices=(0, 1, 2, 3),
    frozen_stages=1,
    norm_cfg=dict(type='BN', requires_grad=True),
    norm_eval=True,
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/san19_patchwise_imagenet.pth'))
san19_acmix = dict(san19, type='SANACmix', rate_init=(1.0, 0.0))
