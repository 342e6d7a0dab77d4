# RetinaNet with PVT-ACmix-L, 1x schedule; the PVT-ACmix-T config with the large
# backbone, starting from the official PVT-L ImageNet weights.
_base_ = './retinanet_pvt_acmix_t_1x.py'
model = dict(
    backbone=dict(
        arch='large',
        init_cfg=dict(checkpoint='https://github.com/whai362/PVT/releases/download/v2/'
                      'pvt_large.pth')))
