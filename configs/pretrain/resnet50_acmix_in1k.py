# ResNet-ACmix-50 (paper Table 9) on ImageNet-1k, beside resnet50_in1k.py: the same
# recipe, only the backbone differs (ACmix in place of every bottleneck's 3x3
# convolution, the official initialisation and rates (0.5, 0.5)). The checkpoint it
# writes feeds the ResNet-ACmix detection configs:
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/resnet50_acmix_in1k/epoch_100.pth
_base_ = './resnet50_in1k.py'
model = dict(
    backbone=dict(_delete_=True, type='ResNetACmix', depth=50, out_indices=(3, )))
