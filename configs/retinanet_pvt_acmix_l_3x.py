# RetinaNet with PVT-ACmix-L, 3x schedule (paper Table 5: 45.3 mAP): the PVT-L
# baseline's 3x recipe, only the backbone differs (_base_/backbones/pvt_acmix_l.py).
_base_ = ['./retinanet_pvt_l_3x.py', '_base_/backbones/pvt_acmix_l.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True))
