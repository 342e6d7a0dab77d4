# SAN-ACmix-15 (paper Table 10; blocks 3-2-3-5-2) on ImageNet-1k: the SAN recipe.
_base_ = './san19_acmix_in1k.py'
model = dict(backbone=dict(depth=15))
