# Semantic FPN with PVT-ACmix-T on ADE20K (paper Table 2: 17M, 160 GFLOPs, 42.7 mIoU):
# the baseline's recipe, only the backbone differs (_base_/backbones/pvt_acmix_t.py).
_base_ = ['./sem_fpn_pvt_t_40k.py', '_base_/backbones/pvt_acmix_t.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True))
