# RetinaNet with PVT-ACmix-L, 1x schedule: the PVT-L baseline's recipe, only the
# backbone differs (_base_/backbones/pvt_acmix_l.py).
_base_ = ['./retinanet_pvt_l_1x.py', '_base_/backbones/pvt_acmix_l.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True))
