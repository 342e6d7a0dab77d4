# PVT-ACmix-T (paper Table 1) as the downstream configs use it (a backbone base: see
# swin_acmix_t.py for how a config swaps it in). PVT-ACmix ImageNet weights were never
# released: it loads the official PVT-T ImageNet checkpoint (converted on load) with
# (alpha, beta) = (1, 0), so that at step 0 it computes exactly that PVT; the
# shift-initialised convolution path is learnt from there.
# From our ImageNet pretraining (configs/pretrain/pvt_acmix_t_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/pvt_acmix_t_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
backbone = dict(
    type='PVTACmix',
    arch='tiny',
    rate_init=(1.0, 0.0),
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_tiny.pth'))
