# Baseline: RetinaNet with mmdet's PVT-S, 1x schedule; the PVT-T recipe with the small
# backbone.
_base_ = './retinanet_pvt_t_1x.py'
model = dict(
    backbone=dict(
        num_layers=[3, 4, 6, 3],
        init_cfg=dict(checkpoint='https://github.com/whai362/PVT/releases/download/v2/'
                      'pvt_small.pth')))
