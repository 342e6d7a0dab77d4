# Mask R-CNN with Swin-ACmix-T, 3x schedule (paper Table 4: 275 GFLOPs, 47.0 box mAP):
# the baseline's recipe, only the backbone differs (drop path 0.2, as Swin-T's).
# Weights: the official Swin-ACmix ImageNet releases (LeapLabTHU/ACmix README, Tsinghua
# Cloud / Google Drive links, not downloadable by URL) must be put at the path below;
# they are converted on load (or convert them once with tools/convert_ckpt.py). Or set
# init_cfg=None to train from scratch.
# From our ImageNet pretraining (configs/pretrain/swin_acmix_t_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/swin_acmix_t_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
_base_ = './mask_rcnn_swin_t_3x.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinACmix',
        arch='tiny',
        drop_path_rate=0.2,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/acmix_swin_tiny_patch4_window7_224.pth')))
