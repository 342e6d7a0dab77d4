# RetinaNet with SAN-19-ACmix (paper Table 3: 233 GFLOPs, 39.1 mAP at 1x): the SAN-19
# baseline, only the backbone's type differs. The authors never released SAN-ACmix
# ImageNet weights: it starts from the same SAN weights with (alpha, beta) = (1, 0),
# i.e. exactly the pretrained SAN at step 0, and learns its convolution paths during
# fine-tuning.
# From our ImageNet pretraining (configs/pretrain/san19_acmix_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/san19_acmix_in1k/epoch_100.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = './retinanet_san19_1x.py'
model = dict(backbone=dict(type='SANACmix', rate_init=(1.0, 0.0)))
