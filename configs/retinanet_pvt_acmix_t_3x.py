# RetinaNet PVT-ACmix-T, 3x schedule (paper Table 4: 232 GFLOPs, 42.0 mAP): the
# baseline's 3x recipe, only the backbone differs (see _base_/models/pvt_acmix_t.py).
_base_ = ['./retinanet_pvt_t_3x.py', '_base_/models/pvt_acmix_t.py']
model = dict(backbone={{_base_.pvt_acmix_t}})
