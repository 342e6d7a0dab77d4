# Semantic FPN with AttNet-T1 on ADE20K, beside sem_fpn_pvt_acmix_t_40k.py: PVT's 40k
# recipe, only the backbone differs (_base_/backbones/attnet_t1.py).
_base_ = ['./sem_fpn_pvt_t_40k.py', '_base_/backbones/attnet_t1.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True),
             neck=dict(in_channels=[48, 96, 224, 384]))
