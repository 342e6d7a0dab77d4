# RetinaNet with AttNet-T1, 3x schedule, beside retinanet_pvt_acmix_t_3x.py: PVT-T's 3x
# recipe (multi-scale, 36 epochs), only the backbone differs.
_base_ = ['./retinanet_pvt_t_3x.py', '_base_/models/attnet.py']
model = dict(
    backbone={{_base_.attnet_t1}},
    neck=dict(in_channels=[48, 96, 224, 384]))
