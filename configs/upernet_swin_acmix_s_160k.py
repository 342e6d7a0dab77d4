# UperNet with Swin-ACmix-S on ADE20K (paper Table 2: 81M, 1043 GFLOPs, 48.7 mIoU): the
# baseline's recipe, only the backbone differs (_base_/backbones/swin_acmix_s.py).
_base_ = ['./upernet_swin_s_160k.py', '_base_/backbones/swin_acmix_s.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True))
