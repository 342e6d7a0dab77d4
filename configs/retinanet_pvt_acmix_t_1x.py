# RetinaNet with PVT-ACmix-T (paper Table 4: 232 GFLOPs, 40.5 mAP at 1x): the baseline's
# recipe, only the backbone differs (_base_/backbones/pvt_acmix_t.py: the official PVT-T
# weights with (alpha, beta) = (1, 0)).
_base_ = ['./retinanet_pvt_t_1x.py', '_base_/backbones/pvt_acmix_t.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True))
