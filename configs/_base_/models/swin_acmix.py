# The Swin-ACmix-T and -S backbones of the paper configs, defined once; SwinACmix is
# registered for mmdet and mmseg alike. Each replaces any base backbone.
# Weights: the official Swin-ACmix ImageNet releases (LeapLabTHU/ACmix README, Tsinghua
# Cloud / Google Drive links, not downloadable by URL) must be put at the paths below;
# they are converted on load (or convert them once with tools/convert_ckpt.py). Or set
# init_cfg=None to train from scratch.
# swin_acmix_t: the detection recipes (drop path 0.2, as Swin-T's Mask R-CNN / Cascade).
swin_acmix_t = dict(
    _delete_=True,
    type='SwinACmix',
    arch='tiny',
    drop_path_rate=0.2,
    init_cfg=dict(
        type='Pretrained', checkpoint='checkpoints/acmix_swin_tiny_patch4_window7_224.pth'))
# seg_swin_acmix_t: UperNet (drop path 0.3, as Swin-T's UperNet recipe).
seg_swin_acmix_t = dict(swin_acmix_t, drop_path_rate=0.3)
# swin_acmix_s: drop path 0.3 in both libraries' recipes.
swin_acmix_s = dict(
    swin_acmix_t,
    arch='small',
    drop_path_rate=0.3,
    init_cfg=dict(
        type='Pretrained',
        checkpoint='checkpoints/acmix_swin_small_patch4_window7_224.pth'))
