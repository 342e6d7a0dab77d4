# Baseline: UperNet with mmseg's Swin-S on ADE20K (paper Table 2: 81M, 1038 GFLOPs, 47.6
# mIoU): mmseg's own config (the Swin-T recipe with the small backbone).
_base_ = [
    'mmseg::swin/swin-small-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    '_base_/acmix_runtime.py'
]
# Ours: keep the last 3 checkpoints; the recipes assume 8 GPUs x 2 images, which
# --auto-scale-lr rescales for other batches.
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
auto_scale_lr = dict(enable=False, base_batch_size=16)
