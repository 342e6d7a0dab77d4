# Swin-T and Swin-S backbones of the baseline configs, defined once, starting from the
# official ImageNet-1K weights. Each replaces any base backbone.
# swin_t / swin_s: mmdet's SwinTransformer for the detection recipes (drop path 0.2 for
# Swin-T, 0.3 for Swin-S, as Swin's Mask R-CNN and Cascade Mask R-CNN); mmdet converts
# the official checkpoint on load.
swin_t = dict(
    _delete_=True,
    type='SwinTransformer',
    embed_dims=96,
    depths=[2, 2, 6, 2],
    num_heads=[3, 6, 12, 24],
    window_size=7,
    mlp_ratio=4,
    drop_path_rate=0.2,
    out_indices=(0, 1, 2, 3),
    convert_weights=True,
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://github.com/SwinTransformer/storage/releases/download/v1.0.0/'
        'swin_tiny_patch4_window7_224.pth'))
swin_s = dict(
    swin_t,
    depths=[2, 2, 18, 2],
    drop_path_rate=0.3,
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://github.com/SwinTransformer/storage/releases/download/v1.0.0/'
        'swin_small_patch4_window7_224.pth'))
# seg_swin_t / seg_swin_s: mmseg's SwinTransformer for UperNet (drop path 0.3, as Swin's
# UperNet); mmseg cannot convert, so they load mmseg's converted copies of the weights.
seg_swin_t = dict(
    _delete_=True,
    type='SwinTransformer',
    embed_dims=96,
    depths=[2, 2, 6, 2],
    num_heads=[3, 6, 12, 24],
    window_size=7,
    mlp_ratio=4,
    drop_path_rate=0.3,
    use_abs_pos_embed=False,
    out_indices=(0, 1, 2, 3),
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/'
        'swin_tiny_patch4_window7_224_20220317-1cdeb081.pth'))
seg_swin_s = dict(
    seg_swin_t,
    depths=[2, 2, 18, 2],
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/'
        'swin_small_patch4_window7_224_20220317-7ba6d6dd.pth'))
