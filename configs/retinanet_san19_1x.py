# Baseline: RetinaNet with patchwise SAN-19 (paper Table 3: 229 GFLOPs, 38.2 mAP at 1x):
# the ResNet-50 RetinaNet recipe (SGD, 12 epochs), only the backbone differs.
_base_ = ['./retinanet_r50_1x.py', '_base_/models/san.py']
model = dict(backbone={{_base_.san19}})
