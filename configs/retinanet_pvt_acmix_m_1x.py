# RetinaNet with PVT-ACmix-M, 1x schedule: the PVT-M baseline's recipe, only the
# backbone differs (_base_/backbones/pvt_acmix_m.py).
_base_ = ['./retinanet_pvt_m_1x.py', '_base_/backbones/pvt_acmix_m.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True))
