# Semantic FPN with PVT-ACmix-S on ADE20K (paper Table 2: 29M, 228 GFLOPs, 46.4 mIoU):
# the PVT-S baseline's recipe, only the backbone differs (_base_/backbones/pvt_acmix_s.py).
_base_ = ['./sem_fpn_pvt_s_40k.py', '_base_/backbones/pvt_acmix_s.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True))
