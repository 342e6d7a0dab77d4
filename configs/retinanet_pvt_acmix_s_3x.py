# RetinaNet with PVT-ACmix-S, 3x schedule: the PVT-S baseline's 3x recipe, only the
# backbone differs (_base_/backbones/pvt_acmix_s.py).
_base_ = ['./retinanet_pvt_s_3x.py', '_base_/backbones/pvt_acmix_s.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True))
