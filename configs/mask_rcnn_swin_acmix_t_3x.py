# Mask R-CNN with Swin-ACmix-T, 3x schedule (paper Table 4: 275 GFLOPs, 47.0 box mAP):
# the baseline's recipe, only the backbone differs (see _base_/models/swin_acmix.py).
_base_ = ['./mask_rcnn_swin_t_3x.py', '_base_/models/swin_acmix.py']
model = dict(backbone={{_base_.swin_acmix_t}})
