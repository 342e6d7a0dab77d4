# RetinaNet with ResNet-50-ACmix (paper Table 3: 230 GFLOPs, 38.3 mAP at 1x): the
# baseline's recipe, only the backbone differs (see _base_/models/resnet50_acmix.py).
_base_ = ['./retinanet_r50_1x.py', '_base_/models/resnet50_acmix.py']
model = dict(backbone={{_base_.resnet50_acmix}})
