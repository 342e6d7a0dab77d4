# RetinaNet with PVT-ACmix-T (paper Table 4: 232 GFLOPs, 40.5 mAP at 1x); the recipe is
# the baseline's, only the backbone differs. The backbone starts from the official PVT-T
# ImageNet weights (PVT-ACmix weights were never released), converted on load.
_base_ = './retinanet_pvt_t_1x.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='PVTACmix',
        arch='tiny',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_tiny.pth')))
