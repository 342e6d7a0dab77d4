# The AttNet-T1 and -T2 backbones (Attentive Convolution, Yu et al. 2025) of the configs
# that put ATConv beside ACmix, defined once; AttNet is registered for mmdet and mmseg
# alike. Each replaces any base backbone.
# Weights: the official ImageNet-1K releases (price112/Attentive-Convolution README, a
# OneDrive folder, not downloadable by URL) must be put at the paths below; they are
# converted on load (or convert them once with tools/convert_ckpt.py). Or set
# init_cfg=None to train from scratch.
# The BatchNorms of the stem and downsampling convolutions keep their ImageNet statistics
# (norm_eval), as mmdet's ResNet recipes do at 2 images per GPU; the blocks use
# LayerNorm and RMS norm.
# attnet_t1: beside PVT-ACmix-T (RetinaNet, Semantic FPN); drop path 0.1 as its ImageNet
# training and PVT-ACmix's default.
attnet_t1 = dict(
    _delete_=True,
    type='AttNet',
    arch='t1',
    drop_path_rate=0.1,
    norm_eval=True,
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/AttNet_T1.pth'))
# attnet_t2: beside Swin-ACmix-T in Mask R-CNN (drop path 0.2, as Swin-T's detection
# recipes and AttNet-T2's ImageNet training).
attnet_t2 = dict(
    attnet_t1,
    arch='t2',
    drop_path_rate=0.2,
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/AttNet_T2.pth'))
# seg_attnet_t2: UperNet (drop path 0.3, as Swin-T's UperNet recipe).
seg_attnet_t2 = dict(attnet_t2, drop_path_rate=0.3)
# No weight decay on the layer scales and ATConv's inhibition strengths, as in AttNet's
# ImageNet training (norms are already excluded by Swin's recipes).
attnet_no_decay = dict(
    layer_scale=dict(decay_mult=0.), inhibition_logit=dict(decay_mult=0.))
