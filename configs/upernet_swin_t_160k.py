# Baseline: UperNet with mmseg's Swin-T on ADE20K (paper Table 2: 60M, 945 GFLOPs, 44.5
# mIoU): mmseg's own config of Swin's recipe. AdamW lr 6e-5, weight decay 0.01 (none on
# norms and position biases), 1500 linear warm-up iterations then linear decay to 0 at
# 160k, 8 GPUs x 2 images, 512x512 crops, drop path 0.3, mmseg's converted copy of the
# official Swin-T ImageNet weights.
_base_ = [
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    '_base_/acmix_runtime.py'
]
# Ours: keep the last 3 checkpoints; the recipes assume 8 GPUs x 2 images, which
# --auto-scale-lr rescales for other batches.
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
auto_scale_lr = dict(enable=False, base_batch_size=16)
