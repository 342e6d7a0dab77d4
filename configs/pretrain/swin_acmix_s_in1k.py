# Swin-ACmix-S (paper Table 12) on ImageNet-1k: the recipe of Swin-S (mmpretrain's
# swin-small_16xb64_in1k.py: that of Swin-T with drop path 0.3).
_base_ = './swin_acmix_t_in1k.py'
model = dict(backbone=dict(arch='small', drop_path_rate=0.3))
