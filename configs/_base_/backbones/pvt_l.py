# The baselines' PVT-L: mmdet's PVT-T config with PVT-L's depths and official weights,
# as mmdet's retinanet_pvt-l_fpn_1x_coco.py sets them (for the 3x recipe, which mmdet
# ships no PVT config of). Merged into the baseline's backbone with
# model = dict(backbone=_base_.pop('backbone')).
backbone = dict(
    num_layers=[3, 8, 27, 3],
    init_cfg=dict(
        checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_large.pth'))
