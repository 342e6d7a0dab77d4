# UperNet with Swin-ACmix-T on ADE20K (paper Table 2: 60M, 950 GFLOPs, 45.3 mIoU): the
# baseline's recipe, only the backbone differs (drop path 0.3, as Swin-T's UperNet;
# weights as in mask_rcnn_swin_acmix_t_3x.py). SwinACmix is registered for mmseg too.
# From our ImageNet pretraining (configs/pretrain/swin_acmix_t_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/swin_acmix_t_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = './upernet_swin_t_160k.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinACmix',
        arch='tiny',
        drop_path_rate=0.3,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/acmix_swin_tiny_patch4_window7_224.pth')))
