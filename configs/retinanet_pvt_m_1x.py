# Baseline: RetinaNet with mmdet's PVT-M, 1x schedule: mmdet's own config (the PVT-T
# recipe with the medium backbone).
_base_ = ['mmdet::pvt/retinanet_pvt-m_fpn_1x_coco.py', '_base_/acmix_runtime.py']
# Ours: keep the last 3 checkpoints (mmdet keeps every epoch's).
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
