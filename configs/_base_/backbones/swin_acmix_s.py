# Swin-ACmix-S (paper Table 1): drop path 0.3, as Swin-S's; weights as in swin_acmix_t.py
# (the official Swin-ACmix-S release at the path below).
# From our ImageNet pretraining (configs/pretrain/swin_acmix_s_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/swin_acmix_s_in1k/epoch_300.pth
_base_ = './swin_acmix_t.py'
backbone = dict(
    arch='small',
    drop_path_rate=0.3,
    init_cfg=dict(checkpoint='checkpoints/acmix_swin_small_patch4_window7_224.pth'))
