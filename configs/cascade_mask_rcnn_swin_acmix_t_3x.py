# Cascade Mask R-CNN with Swin-ACmix-T, 3x schedule (paper Table 4: 754 GFLOPs): the
# baseline's recipe, only the backbone differs (that of mask_rcnn_swin_acmix_t_3x.py,
# whose comment says where its weights come from).
# From our ImageNet pretraining (configs/pretrain/swin_acmix_t_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/swin_acmix_t_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = './cascade_mask_rcnn_swin_t_3x.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinACmix',
        arch='tiny',
        drop_path_rate=0.2,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/acmix_swin_tiny_patch4_window7_224.pth')))
