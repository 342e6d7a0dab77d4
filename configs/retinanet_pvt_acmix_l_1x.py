# RetinaNet with PVT-ACmix-L, 1x schedule; the PVT-ACmix-T config with the large
# backbone, starting from the official PVT-L ImageNet weights.
# From our ImageNet pretraining instead: train configs/pretrain/pvt_acmix_s_in1k.py
# with --cfg-options model.backbone.arch=large --work-dir work_dirs/pvt_acmix_l_in1k,
# then --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/pvt_acmix_l_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = './retinanet_pvt_acmix_t_1x.py'
model = dict(
    backbone=dict(
        arch='large',
        init_cfg=dict(checkpoint='https://github.com/whai362/PVT/releases/download/v2/'
                      'pvt_large.pth')))
