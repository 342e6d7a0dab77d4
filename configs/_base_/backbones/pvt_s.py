# The baselines' PVT-S: mmdet's PVT-T config with PVT-S's depths and official weights
# (for the recipes mmdet and mmseg ship no PVT-S config of). Merged into the baseline's
# backbone with model = dict(backbone=_base_.pop('backbone')).
backbone = dict(
    num_layers=[3, 4, 6, 3],
    init_cfg=dict(
        checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_small.pth'))
