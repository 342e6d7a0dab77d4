# Baseline: Semantic FPN with mmdet's PVT-S on ADE20K (paper Table 2: 28M, 225 GFLOPs,
# 42.4 mIoU); the PVT-T recipe with the small backbone.
_base_ = './sem_fpn_pvt_t_40k.py'
model = dict(
    backbone=dict(
        num_layers=[3, 4, 6, 3],
        init_cfg=dict(checkpoint='https://github.com/whai362/PVT/releases/download/v2/'
                      'pvt_small.pth')))
