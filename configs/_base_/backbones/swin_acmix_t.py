# Swin-ACmix-T (paper Table 1) as the downstream configs use it: drop path 0.2, as
# Swin-T's detection recipes (the segmentors set 0.3). A backbone base: a config lists it
# after its baseline and swaps it in with
#   model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True))
# (popped, so that the dumped config keeps no top-level copy).
# Weights: the official Swin-ACmix ImageNet releases (LeapLabTHU/ACmix README, Tsinghua
# Cloud / Google Drive links, not downloadable by URL) must be put at the path below;
# they are converted on load (or convert them once with tools/convert_ckpt.py). Or set
# init_cfg=None to train from scratch.
# From our ImageNet pretraining (configs/pretrain/swin_acmix_t_in1k.py) instead: --cfg-options
#   model.backbone.init_cfg.checkpoint=work_dirs/swin_acmix_t_in1k/epoch_300.pth
# ((alpha, beta) then come from that checkpoint; rate_init does not matter).
backbone = dict(
    type='SwinACmix',
    arch='tiny',
    drop_path_rate=0.2,
    init_cfg=dict(
        type='Pretrained', checkpoint='checkpoints/acmix_swin_tiny_patch4_window7_224.pth'))
