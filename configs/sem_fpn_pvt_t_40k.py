# Baseline: Semantic FPN with mmdet's PVT-T on ADE20K (paper Table 2: 17M, 158 GFLOPs,
# 37.1 mIoU). PVT's recipe on mmseg's own Semantic FPN, ADE20K data (512x512 random
# resize-and-crop, short side 512 at test) and 40k schedule (mmseg ships Semantic FPN
# for ResNet only): what PVT changes is the backbone, AdamW lr 1e-4 with weight decay
# 1e-4, and the poly schedule decaying to 0; 8 GPUs x 2 images.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/schedules/schedule_40k.py', 'mmseg::_base_/default_runtime.py',
    '_base_/acmix_runtime.py'
]
# As mmseg's Semantic FPN ADE20K config: 512x512 crops, 150 classes; and no ResNet
# weights (the model base names them in `pretrained`, which would reach the PVT).
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmdet.PyramidVisionTransformer',
        num_layers=[2, 2, 2, 2],
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_tiny.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(num_classes=150))
train_dataloader = dict(batch_size=2)  # x 8 GPUs (mmseg's ADE20K data: 4)
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, weight_decay=0.0001))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False)
]
# Ours: keep the last 3 checkpoints; the recipes assume 8 GPUs x 2 images, which
# --auto-scale-lr rescales for other batches.
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
auto_scale_lr = dict(enable=False, base_batch_size=16)
