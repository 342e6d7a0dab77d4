# Baseline: Semantic FPN with mmdet's PVT-S on ADE20K (paper Table 2: 28M, 225 GFLOPs,
# 42.4 mIoU); the PVT-T recipe with the small backbone.
_base_ = ['./sem_fpn_pvt_t_40k.py', '_base_/backbones/pvt_s.py']
model = dict(backbone=_base_.pop('backbone'))
