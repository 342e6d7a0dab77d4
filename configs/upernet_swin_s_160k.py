# Baseline: UperNet with mmseg's Swin-S on ADE20K (paper Table 2: 81M, 1038 GFLOPs, 47.6
# mIoU); the Swin-T recipe with the small backbone.
_base_ = './upernet_swin_t_160k.py'
model = dict(backbone={{_base_.seg_swin_s}})
