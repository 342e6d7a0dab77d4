# PVT-ACmix-L (paper Table 1): pvt_acmix_t.py with the large arch, starting from the
# official PVT-L ImageNet weights.
# From our ImageNet pretraining instead: train configs/pretrain/pvt_acmix_s_in1k.py
# with --cfg-options model.backbone.arch=large --work-dir work_dirs/pvt_acmix_l_in1k,
# then --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/pvt_acmix_l_in1k/epoch_300.pth
_base_ = './pvt_acmix_t.py'
backbone = dict(arch='large', init_cfg=dict(
    checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_large.pth'))
