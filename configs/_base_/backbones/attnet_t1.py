# AttNet-T1 (ATConv; 13.3M backbone params) as the downstream configs use it (a backbone
# base: see swin_acmix_t.py for how a config swaps it in; its channels, 48, 96, 224 and
# 384, go to the neck). ATConv's authors report no detection results.
# Weights: the official AttNet ImageNet-1K releases (price112/Attentive-Convolution
# README, a OneDrive folder, not downloadable by URL) must be put at the path below; they
# are converted on load (or convert them once with tools/convert_ckpt.py). Or set
# init_cfg=None to train from scratch.
# The BatchNorms of the stem and downsampling convolutions keep their ImageNet statistics
# (norm_eval), as mmdet's ResNet recipes do at 2 images per GPU; the blocks use
# LayerNorm and RMS norm. Drop path 0.1, as its ImageNet training and PVT-ACmix's
# default. AttNet is registered for mmdet and mmseg alike.
backbone = dict(
    type='AttNet',
    arch='t1',
    drop_path_rate=0.1,
    norm_eval=True,
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/AttNet_T1.pth'))
