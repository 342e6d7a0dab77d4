# Baseline: RetinaNet with mmdet's PVT-T (paper Table 4: 230 GFLOPs, 36.7 mAP at 1x):
# mmdet's own config. COCO 2017, 12 epochs, AdamW lr 1e-4, weight decay 1e-4, 8 GPUs x 2
# images, 1333x800, the official PVT-T ImageNet weights (converted on load by mmdet).
_base_ = ['mmdet::pvt/retinanet_pvt-t_fpn_1x_coco.py', '_base_/acmix_runtime.py']
# Ours: keep the last 3 checkpoints (mmdet keeps every epoch's).
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
