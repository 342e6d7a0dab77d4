# ResNet-ACmix-38 (paper Table 9; blocks 2-3-5-2) on ImageNet-1k: the ResNet-50 recipe.
_base_ = './resnet50_acmix_in1k.py'
model = dict(backbone=dict(depth=38))
