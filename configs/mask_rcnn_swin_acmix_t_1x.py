# Mask R-CNN with Swin-ACmix-T, 1x schedule (not in the paper): the 1x baseline's recipe
# (Swin's 1x, mmdet's config), only the backbone differs (_base_/backbones/swin_acmix_t.py).
_base_ = ['./mask_rcnn_swin_t_1x.py', '_base_/backbones/swin_acmix_t.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True))
