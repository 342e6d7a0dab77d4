# Baseline: Mask R-CNN with mmdet's Swin-T, 3x schedule (paper Table 4: 272 GFLOPs,
# 46.0 box mAP): mmdet's own config of Swin's recipe. COCO 2017, 36 epochs, lr steps at
# 27 and 33, AdamW lr 1e-4, weight decay 0.05 (none on norms and position biases), 1000
# warm-up iterations, 8 GPUs x 2 images, multi-scale training with random crops (DETR's
# augmentation), drop path 0.2, the official Swin-T ImageNet weights.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py',
          '_base_/acmix_runtime.py']
# Ours: keep the last 3 checkpoints (mmdet keeps every epoch's).
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
