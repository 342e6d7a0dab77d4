# UperNet with Swin-ACmix-S on ADE20K (paper Table 2: 81M, 1043 GFLOPs, 48.7 mIoU): the
# baseline's recipe, only the backbone differs (see _base_/models/swin_acmix.py).
# From our ImageNet pretraining (configs/pretrain/swin_acmix_s_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/swin_acmix_s_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = ['./upernet_swin_s_160k.py', '_base_/models/swin_acmix.py']
model = dict(backbone={{_base_.swin_acmix_s}})
