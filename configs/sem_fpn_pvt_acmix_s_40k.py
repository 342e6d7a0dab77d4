# Semantic FPN with PVT-ACmix-S on ADE20K (paper Table 2: 29M, 228 GFLOPs, 46.4 mIoU),
# starting from the official PVT-S ImageNet weights like the -T config.
# From our ImageNet pretraining (configs/pretrain/pvt_acmix_s_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/pvt_acmix_s_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = './sem_fpn_pvt_acmix_t_40k.py'
model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(checkpoint='https://github.com/whai362/PVT/releases/download/v2/'
                      'pvt_small.pth')))
