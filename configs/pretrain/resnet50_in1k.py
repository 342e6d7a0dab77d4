# ResNet-50 on ImageNet-1k with the paper's ResNet recipe (ACmix Appendix B, following
# SAN [54]): SGD (momentum 0.9, weight decay 1e-4), batch 256 (8 GPUs x 32), lr 0.1 with
# cosine decay over 100 epochs, label smoothing 0.1, random resized crop, horizontal
# flip and normalisation. All of it is mmpretrain's own: its ResNet-50 with label
# smoothing, its ImageNet data at 32 per GPU, its cosine SGD schedule and runtime.
# Top-1 / top-5 on data/imagenet/val (tools/test.py).
_base_ = [
    'mmpretrain::_base_/models/resnet50_label_smooth.py',
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    'mmpretrain::_base_/schedules/imagenet_bs256_coslr.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/acmix_runtime.py',
]
