# RetinaNet with PVT-ACmix-S, 3x schedule; the PVT-ACmix-T config with the small
# backbone, starting from the official PVT-S ImageNet weights.
_base_ = './retinanet_pvt_acmix_t_3x.py'
model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(checkpoint='https://github.com/whai362/PVT/releases/download/v2/'
                      'pvt_small.pth')))
