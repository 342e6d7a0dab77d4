# Swin-ACmix-T (paper Table 12) on ImageNet-1k, beside swin_t_in1k.py: the same recipe,
# only the backbone differs. (alpha, beta) are one-element parameters, so the recipe's
# flat_decay_mult=0 keeps them out of weight decay, as the official training does. The
# checkpoint feeds the Swin-ACmix-T detection and segmentation configs:
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/swin_acmix_t_in1k/epoch_300.pth
_base_ = './swin_t_in1k.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinACmix',
        arch='tiny',
        out_indices=(3, ),
        drop_path_rate=0.2))
