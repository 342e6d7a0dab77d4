# RetinaNet PVT-ACmix-T, 3x schedule (paper Table 4: 232 GFLOPs, 42.0 mAP): the
# baseline's 3x recipe, only the backbone differs (_base_/backbones/pvt_acmix_t.py).
_base_ = ['./retinanet_pvt_t_3x.py', '_base_/backbones/pvt_acmix_t.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True))
