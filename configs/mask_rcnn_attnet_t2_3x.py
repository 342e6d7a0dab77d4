# Mask R-CNN with AttNet-T2 (ATConv; 26.5M backbone params, Swin-T has 27.5M), 3x
# schedule, beside mask_rcnn_swin_acmix_t_3x.py: Swin's recipe, only the backbone (and
# the weight decay of its layer scales) differs. Weights and BatchNorms as in
# retinanet_attnet_t1_1x.py; drop path 0.2, as Swin-T's detection recipes and AttNet-T2's
# ImageNet training.
_base_ = './mask_rcnn_swin_t_3x.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='AttNet',
        arch='t2',
        drop_path_rate=0.2,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/AttNet_T2.pth')),
    neck=dict(in_channels=[64, 128, 288, 512]))
# No weight decay on the layer scales and ATConv's inhibition strengths, as in AttNet's
# ImageNet training (norms are already excluded by Swin's recipe).
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys=dict(
            layer_scale=dict(decay_mult=0.), inhibition_logit=dict(decay_mult=0.))))
