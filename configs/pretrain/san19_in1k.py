# SAN-19 (patchwise self-attention, Zhao et al., CVPR 2020) on ImageNet-1k. ACmix's
# Appendix B trains SAN models with SAN's own schedule, which is the ResNet recipe of
# resnet50_in1k.py (SGD, batch 256, lr 0.1 cosine over 100 epochs, weight decay 1e-4,
# label smoothing 0.1, random resized crop and flip); only the backbone differs.
_base_ = './resnet50_in1k.py'
model = dict(backbone=dict(_delete_=True, type='SAN', depth=19, out_indices=(3, )))
