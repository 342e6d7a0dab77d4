# RetinaNet with PVT-ACmix-M, 1x schedule; the PVT-ACmix-T config with the medium
# backbone, starting from the official PVT-M ImageNet weights.
_base_ = './retinanet_pvt_acmix_t_1x.py'
model = dict(
    backbone=dict(
        arch='medium',
        init_cfg=dict(checkpoint='https://github.com/whai362/PVT/releases/download/v2/'
                      'pvt_medium.pth')))
