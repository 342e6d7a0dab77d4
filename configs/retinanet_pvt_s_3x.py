# Baseline: RetinaNet with mmdet's PVT-S, 3x schedule: the PVT-T 3x recipe with the
# small backbone (what mmdet's PVT-S config changes in its PVT-T one).
_base_ = ['./retinanet_pvt_t_3x.py', '_base_/backbones/pvt_s.py']
model = dict(backbone=_base_.pop('backbone'))
