# Mask R-CNN with AttNet-T2 (ATConv; 26.5M backbone params, Swin-T has 27.5M), 3x
# schedule, beside mask_rcnn_swin_acmix_t_3x.py: Swin's recipe, only the backbone (and
# the weight decay of its layer scales) differs.
_base_ = ['./mask_rcnn_swin_t_3x.py', '_base_/models/attnet.py']
model = dict(
    backbone={{_base_.attnet_t2}},
    neck=dict(in_channels=[64, 128, 288, 512]))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.attnet_no_decay}}))
