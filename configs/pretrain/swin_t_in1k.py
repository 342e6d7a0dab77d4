# Swin-T on ImageNet-1k: mmpretrain's own config, the Swin paper's recipe (AdamW, lr
# 1e-3 at batch 1024 (16 GPUs x 64), weight decay 0.05, 300 epochs of cosine decay after
# 20 warm-up epochs, gradient clipping at 5, drop path 0.2, RandAugment, random erasing
# 0.25, Mixup 0.8, CutMix 1.0, label smoothing 0.1). The official Swin-ACmix models were
# trained with this recipe (LeapLabTHU/ACmix runs the Swin training code).
_base_ = [
    'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py', '../_base_/acmix_runtime.py'
]
