# RetinaNet with ResNet-50-ACmix (paper Table 3: 230 GFLOPs, 38.3 mAP at 1x): the
# baseline's recipe, only the backbone differs (see _base_/models/resnet50_acmix.py).
# From our ImageNet pretraining (configs/pretrain/resnet50_acmix_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/resnet50_acmix_in1k/epoch_100.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = ['./retinanet_r50_1x.py', '_base_/models/resnet50_acmix.py']
model = dict(backbone={{_base_.resnet50_acmix}})
