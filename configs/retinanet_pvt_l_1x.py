# Baseline: RetinaNet with mmdet's PVT-L, 1x schedule; the PVT-T recipe with the large
# backbone.
_base_ = './retinanet_pvt_t_1x.py'
model = dict(
    backbone=dict(
        num_layers=[3, 8, 27, 3],
        init_cfg=dict(checkpoint='https://github.com/whai362/PVT/releases/download/v2/'
                      'pvt_large.pth')))
