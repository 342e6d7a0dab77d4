# RetinaNet with ResNet-50-ACmix (paper Table 3: 230 GFLOPs, 38.3 mAP at 1x): the
# baseline's recipe, only the backbone differs (_base_/backbones/resnet50_acmix.py: mmdet's
# ResNet-50 detection settings with ACmix in place of every 3x3 convolution; it says
# where the weights come from).
_base_ = ['./retinanet_r50_1x.py', '_base_/backbones/resnet50_acmix.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True))
