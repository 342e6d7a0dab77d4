# Baseline: RetinaNet with mmdet's ResNet-50 (paper Table 3: 250 GFLOPs, 36.7 mAP at 1x):
# mmdet's own config. COCO 2017, 12 epochs, SGD lr 0.01, 8 GPUs x 2 images, 1333x800,
# torchvision ImageNet weights.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', '_base_/acmix_runtime.py']
# Ours: keep the last 3 checkpoints (mmdet keeps every epoch's).
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
