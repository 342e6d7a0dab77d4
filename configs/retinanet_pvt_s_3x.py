# Baseline: RetinaNet with mmdet's PVT-S, 3x schedule: the PVT-T 3x recipe with the
# small backbone (what mmdet's PVT-S config changes in its PVT-T one).
_base_ = './retinanet_pvt_t_3x.py'
model = dict(
    backbone=dict(
        num_layers=[3, 4, 6, 3],
        init_cfg=dict(checkpoint='https://github.com/whai362/PVT/releases/download/v2/'
                      'pvt_small.pth')))
