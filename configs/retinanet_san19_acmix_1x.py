# RetinaNet with SAN-19-ACmix (paper Table 3: 233 GFLOPs, 39.1 mAP at 1x): the SAN-19
# baseline's recipe, only the backbone differs (see _base_/models/san.py).
# From our ImageNet pretraining (configs/pretrain/san19_acmix_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/san19_acmix_in1k/epoch_100.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = ['./retinanet_r50_1x.py', '_base_/models/san.py']
model = dict(backbone={{_base_.san19_acmix}})
