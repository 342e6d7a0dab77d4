# PVT-ACmix-S (paper Table 1): pvt_acmix_t.py with the small arch, starting from the
# official PVT-S ImageNet weights.
# From our ImageNet pretraining (configs/pretrain/pvt_acmix_s_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/pvt_acmix_s_in1k/epoch_300.pth
_base_ = './pvt_acmix_t.py'
backbone = dict(arch='small', init_cfg=dict(
    checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_small.pth'))
