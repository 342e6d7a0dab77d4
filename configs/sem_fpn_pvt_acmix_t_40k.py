# Semantic FPN with PVT-ACmix-T on ADE20K (paper Table 2: 17M, 160 GFLOPs, 42.7 mIoU):
# the baseline's recipe, only the backbone differs (that of retinanet_pvt_acmix_t_1x.py:
# the official PVT-T weights with (alpha, beta) = (1, 0)).
# From our ImageNet pretraining (configs/pretrain/pvt_acmix_t_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/pvt_acmix_t_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = './sem_fpn_pvt_t_40k.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='PVTACmix',
        arch='tiny',
        rate_init=(1.0, 0.0),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_tiny.pth')))
