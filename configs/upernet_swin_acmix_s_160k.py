# UperNet with Swin-ACmix-S on ADE20K (paper Table 2: 81M, 1043 GFLOPs, 48.7 mIoU): the
# baseline's recipe, only the backbone differs (see _base_/models/swin_acmix.py).
_base_ = ['./upernet_swin_s_160k.py', '_base_/models/swin_acmix.py']
model = dict(backbone={{_base_.swin_acmix_s}})
