# Semantic FPN with PVT-ACmix-T on ADE20K (paper Table 2: 17M, 160 GFLOPs, 42.7 mIoU):
# the baseline's recipe, only the backbone differs (see _base_/models/pvt_acmix_t.py).
# From our ImageNet pretraining (configs/pretrain/pvt_acmix_t_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/pvt_acmix_t_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = ['./sem_fpn_pvt_t_40k.py', '_base_/models/pvt_acmix_t.py']
model = dict(backbone={{_base_.pvt_acmix_t}})
