# Baseline: Cascade Mask R-CNN with mmdet's Swin-T, 3x schedule (paper Table 4: 750
# GFLOPs; the Swin paper's row: 745 GFLOPs, 50.5 box mAP). Swin's published cascade
# recipe: box heads with 4 shared convolutions (SyncBN) and 1 fc, GIoU loss on decoded
# boxes; the training recipe of mask_rcnn_swin_t_3x.py. mmdet ships it for ConvNeXt-T
# (whose detection recipes are Swin's), which this inherits with what Swin does
# differently: the backbone (as mmdet's Swin-T Mask R-CNN configs write it) and the
# optimizer (Swin's: lr 1e-4, no layer-wise decay, float32).
_base_ = 'mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'  # noqa: E501
# acmix_mm in place of mmpretrain (ConvNeXt's home): it registers the backbones and the
# runner that writes checkpoints atomically.
custom_imports = dict(imports=['acmix_mm'], allow_failed_imports=False)
runner_type = 'AtomicCheckpointRunner'
# Ours: keep the last 3 checkpoints (mmdet keeps every epoch's).
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
checkpoint_file = ('https://github.com/SwinTransformer/storage/releases/download/v1.0.0/'
                   'swin_tiny_patch4_window7_224.pth')
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        embed_dims=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        mlp_ratio=4,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.2,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        with_cp=False,
        convert_weights=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))
