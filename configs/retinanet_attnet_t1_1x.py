# RetinaNet with AttNet-T1 (ATConv; 13.3M backbone params), beside
# retinanet_pvt_acmix_t_1x.py: the same recipe (PVT-T's 1x), only the backbone differs.
# ATConv's authors report no detection results; nothing to compare with but our runs.
_base_ = ['./retinanet_pvt_t_1x.py', '_base_/models/attnet.py']
model = dict(
    backbone={{_base_.attnet_t1}},
    neck=dict(in_channels=[48, 96, 224, 384]))
