# RetinaNet AttNet-T1 on the bundled demo data, beside retinanet_pvt_acmix_t_demo.py:
# the same data, schedule, optimizer and seed; only the backbone (and the neck's input
# widths) differ. From scratch (no ImageNet weights), so the BatchNorms of the stem and
# downsampling convolutions train (no norm_eval).
_base_ = './retinanet_pvt_acmix_t_demo.py'
model = dict(
    backbone=dict(
        _delete_=True, type='AttNet', arch='t1', drop_path_rate=0.1, init_cfg=None),
    neck=dict(in_channels=[48, 96, 224, 384]))
