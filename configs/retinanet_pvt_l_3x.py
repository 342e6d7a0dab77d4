# Baseline: RetinaNet with mmdet's PVT-L, 3x schedule (paper Table 5: 43.4 mAP, PVT v1's
# 3x figure): the PVT-T 3x recipe with the large backbone (what mmdet's PVT-L config
# changes in its PVT-T one; float32, as retinanet_pvt_l_1x.py).
_base_ = ['./retinanet_pvt_t_3x.py', '_base_/backbones/pvt_l.py']
model = dict(backbone=_base_.pop('backbone'))
