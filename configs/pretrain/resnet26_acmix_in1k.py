# ResNet-ACmix-26 (paper Table 9; blocks 1-2-4-1) on ImageNet-1k: the ResNet-50 recipe.
_base_ = './resnet50_acmix_in1k.py'
model = dict(backbone=dict(depth=26))
