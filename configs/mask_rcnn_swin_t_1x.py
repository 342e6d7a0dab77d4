# Baseline: Mask R-CNN with mmdet's Swin-T, 1x schedule (not in the paper): mmdet's own
# config of Swin's 1x recipe: 12 epochs, lr steps at 8 and 11, single-scale 1333x800
# training; the model, optimizer and warm-up of mask_rcnn_swin_t_3x.py.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', '_base_/acmix_runtime.py']
# Ours: keep the last 3 checkpoints (mmdet keeps every epoch's).
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
