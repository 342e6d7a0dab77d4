# RetinaNet with PVT-ACmix-T (paper Table 4: 232 GFLOPs, 40.5 mAP at 1x): the baseline's
# recipe, only the backbone differs. PVT-ACmix ImageNet weights were never released: it
# loads the official PVT-T ImageNet checkpoint (converted on load) with (alpha, beta) =
# (1, 0), so that at step 0 it computes exactly that PVT; the shift-initialised
# convolution path is learnt from there.
# From our ImageNet pretraining (configs/pretrain/pvt_acmix_t_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/pvt_acmix_t_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = './retinanet_pvt_t_1x.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='PVTACmix',
        arch='tiny',
        rate_init=(1.0, 0.0),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_tiny.pth')))
