# SAN-ACmix-19 (paper Table 10) on ImageNet-1k, beside san19_in1k.py: the same recipe,
# each patchwise attention with its ACmix convolution path (rates (0.5, 0.5)). The
# checkpoint feeds retinanet_san19_acmix_1x.py:
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/san19_acmix_in1k/epoch_100.pth
_base_ = './san19_in1k.py'
model = dict(backbone=dict(type='SANACmix'))
