# Semantic FPN with PVT-ACmix-T on ADE20K (paper Table 2: 17M, 160 GFLOPs, 42.7 mIoU):
# the baseline's recipe, only the backbone differs (see _base_/models/pvt_acmix_t.py).
_base_ = ['./sem_fpn_pvt_t_40k.py', '_base_/models/pvt_acmix_t.py']
model = dict(backbone={{_base_.pvt_acmix_t}})
