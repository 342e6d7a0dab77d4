# ResNet-ACmix-50 (paper Table 9) on ImageNet-1k, beside resnet50_in1k.py: the same
# recipe, only the backbone differs (ACmix in place of every bottleneck's 3x3
# convolution, the official initialisation and rates (0.5, 0.5)). The checkpoint it
# writes feeds the ResNet-ACmix detection configs:
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/resnet50_acmix_in1k/epoch_100.pth
# The norms train as mmpretrain's ResNet-50 does: batch statistics (norm_eval=False;
# mmdet's default, True, keeps them at their initial values, and the run diverges) and
# the last norm of each block starting at zero (zero_init_residual).
_base_ = './resnet50_in1k.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNetACmix',
        depth=50,
        out_indices=(3, ),
        norm_eval=False,
        zero_init_residual=True))
