# Semantic FPN with AttNet-T1 on ADE20K, beside sem_fpn_pvt_acmix_t_40k.py: PVT's 40k
# recipe, only the backbone differs (that of retinanet_attnet_t1_1x.py, whose comment
# says where its weights come from).
_base_ = './sem_fpn_pvt_t_40k.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='AttNet',
        arch='t1',
        drop_path_rate=0.1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/AttNet_T1.pth')),
    neck=dict(in_channels=[48, 96, 224, 384]))
