# Baseline: UperNet with mmseg's Swin-T on ADE20K (paper Table 2: 60M, 945 GFLOPs, 44.5
# mIoU). Swin's recipe (mmseg's swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k):
# AdamW lr 6e-5, weight decay 0.01 (none on norms and position biases), 1500 linear
# warm-up iterations then linear decay to 0 at 160k, 8 GPUs x 2 images, 512x512 crops.
_base_ = [
    '_base_/models/upernet_r50.py', '_base_/datasets/ade20k.py',
    '_base_/schedules/schedule_160k.py', '_base_/seg_runtime.py', '_base_/models/swin.py'
]
model = dict(
    backbone={{_base_.seg_swin_t}},
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
optim_wrapper = dict(
    optimizer=dict(
        _delete_=True, type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)
]
default_hooks = dict(checkpoint=dict(interval=16000))
