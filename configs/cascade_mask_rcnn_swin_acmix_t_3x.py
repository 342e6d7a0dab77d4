# Cascade Mask R-CNN with Swin-ACmix-T, 3x schedule (paper Table 4: 754 GFLOPs): the
# baseline's recipe, only the backbone differs (_base_/backbones/swin_acmix_t.py).
_base_ = ['./cascade_mask_rcnn_swin_t_3x.py', '_base_/backbones/swin_acmix_t.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True))
