# PVT-ACmix-M (paper Table 1): pvt_acmix_t.py with the medium arch, starting from the
# official PVT-M ImageNet weights.
# From our ImageNet pretraining instead: train configs/pretrain/pvt_acmix_s_in1k.py
# with --cfg-options model.backbone.arch=medium --work-dir work_dirs/pvt_acmix_m_in1k,
# then --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/pvt_acmix_m_in1k/epoch_300.pth
_base_ = './pvt_acmix_t.py'
backbone = dict(arch='medium', init_cfg=dict(
    checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_medium.pth'))
