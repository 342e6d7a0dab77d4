# Semantic FPN with PVT-ACmix-S on ADE20K, 160k iterations (paper Table 2's longer
# schedule): sem_fpn_pvt_acmix_t_160k.py with the small backbone
# (_base_/backbones/pvt_acmix_s.py), as sem_fpn_pvt_acmix_s_40k.py is the 40k one.
_base_ = ['./sem_fpn_pvt_acmix_t_160k.py', '_base_/backbones/pvt_acmix_s.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True))
