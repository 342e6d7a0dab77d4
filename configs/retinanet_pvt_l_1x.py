# Baseline: RetinaNet with mmdet's PVT-L, 1x schedule: mmdet's own config (the PVT-T
# recipe with the large backbone).
_base_ = ['mmdet::pvt/retinanet_pvt-l_fpn_1x_coco.py', '_base_/acmix_runtime.py']
# Ours: keep the last 3 checkpoints (mmdet keeps every epoch's).
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
# Float32 like the other sizes and PVT-ACmix-L (mmdet's PVT-L config alone trains with
# mixed precision; tools/train.py --amp turns it on).
optim_wrapper = dict(type='OptimWrapper')
