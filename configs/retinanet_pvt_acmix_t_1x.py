# RetinaNet with PVT-ACmix-T (paper Table 4: 232 GFLOPs, 40.5 mAP at 1x): the baseline's
# recipe, only the backbone differs (see _base_/models/pvt_acmix_t.py).
# From our ImageNet pretraining (configs/pretrain/pvt_acmix_t_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/pvt_acmix_t_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = ['./retinanet_pvt_t_1x.py', '_base_/models/pvt_acmix_t.py']
model = dict(backbone={{_base_.pvt_acmix_t}})
