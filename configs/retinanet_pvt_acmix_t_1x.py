# RetinaNet with PVT-ACmix-T (paper Table 4: 232 GFLOPs, 40.5 mAP at 1x): the baseline's
# recipe, only the backbone differs (see _base_/models/pvt_acmix_t.py).
_base_ = ['./retinanet_pvt_t_1x.py', '_base_/models/pvt_acmix_t.py']
model = dict(backbone={{_base_.pvt_acmix_t}})
