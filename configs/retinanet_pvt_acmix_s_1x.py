# RetinaNet with PVT-ACmix-S, 1x schedule: the PVT-S baseline's recipe, only the
# backbone differs (_base_/backbones/pvt_acmix_s.py).
_base_ = ['./retinanet_pvt_s_1x.py', '_base_/backbones/pvt_acmix_s.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True))
