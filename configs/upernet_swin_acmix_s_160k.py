# UperNet with Swin-ACmix-S on ADE20K (paper Table 2: 81M, 1043 GFLOPs, 48.7 mIoU): the
# baseline's recipe, only the backbone differs (drop path 0.3, as Swin-S's; the
# official Swin-ACmix-S weights, put at the path below as in
# mask_rcnn_swin_acmix_t_3x.py).
# From our ImageNet pretraining (configs/pretrain/swin_acmix_s_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/swin_acmix_s_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = './upernet_swin_s_160k.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinACmix',
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/acmix_swin_small_patch4_window7_224.pth')))
