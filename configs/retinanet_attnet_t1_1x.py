# RetinaNet with AttNet-T1, beside retinanet_pvt_acmix_t_1x.py: the same recipe (PVT-T's
# 1x), only the backbone differs (_base_/backbones/attnet_t1.py says where its weights
# come from).
_base_ = ['./retinanet_pvt_t_1x.py', '_base_/backbones/attnet_t1.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True),
             neck=dict(in_channels=[48, 96, 224, 384]))
