# UperNet with Swin-ACmix-T on ADE20K (paper Table 2: 60M, 950 GFLOPs, 45.3 mIoU): the
# baseline's recipe, only the backbone differs (_base_/backbones/swin_acmix_t.py, with
# drop path 0.3, as Swin-T's UperNet). SwinACmix is registered for mmseg too.
_base_ = ['./upernet_swin_t_160k.py', '_base_/backbones/swin_acmix_t.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True, drop_path_rate=0.3))
