# PVT-ACmix-S (paper Table 11; blocks 3-4-6-3) on ImageNet-1k: the PVT-T recipe (PVT-S
# also trains with drop path 0.1).
_base_ = './pvt_acmix_t_in1k.py'
model = dict(backbone=dict(arch='small'))
