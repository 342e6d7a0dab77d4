# RetinaNet PVT-ACmix-T, 3x schedule (paper Table 4: 232 GFLOPs, 42.0 mAP): the
# baseline's 3x recipe, only the backbone differs (that of retinanet_pvt_acmix_t_1x.py).
# From our ImageNet pretraining (configs/pretrain/pvt_acmix_t_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/pvt_acmix_t_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = './retinanet_pvt_t_3x.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='PVTACmix',
        arch='tiny',
        rate_init=(1.0, 0.0),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_tiny.pth')))
