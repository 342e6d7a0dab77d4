# SAN-ACmix-10 (paper Table 10; blocks 2-1-2-4-1) on ImageNet-1k: the SAN recipe.
_base_ = './san19_acmix_in1k.py'
model = dict(backbone=dict(depth=10))
