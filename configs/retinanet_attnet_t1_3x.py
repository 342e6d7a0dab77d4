# RetinaNet with AttNet-T1, 3x schedule, beside retinanet_pvt_acmix_t_3x.py: PVT-T's 3x
# recipe (multi-scale, 36 epochs), only the backbone differs (_base_/backbones/attnet_t1.py).
_base_ = ['./retinanet_pvt_t_3x.py', '_base_/backbones/attnet_t1.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True),
             neck=dict(in_channels=[48, 96, 224, 384]))
