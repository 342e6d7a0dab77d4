# RetinaNet with PVT-ACmix-S, 3x schedule; the PVT-ACmix-T config with the small
# backbone, starting from the official PVT-S ImageNet weights.
# From our ImageNet pretraining (configs/pretrain/pvt_acmix_s_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/pvt_acmix_s_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = './retinanet_pvt_acmix_t_3x.py'
model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(checkpoint='https://github.com/whai362/PVT/releases/download/v2/'
                      'pvt_small.pth')))
