# RetinaNet with AttNet-T1, 3x schedule, beside retinanet_pvt_acmix_t_3x.py: PVT-T's 3x
# recipe (multi-scale, 36 epochs), only the backbone differs (that of
# retinanet_attnet_t1_1x.py, whose comment says where its weights come from).
_base_ = './retinanet_pvt_t_3x.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='AttNet',
        arch='t1',
        drop_path_rate=0.1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/AttNet_T1.pth')),
    neck=dict(in_channels=[48, 96, 224, 384]))
