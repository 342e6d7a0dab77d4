# Mask R-CNN with AttNet-T2, 3x schedule, beside mask_rcnn_swin_acmix_t_3x.py: Swin's
# recipe, only the backbone (_base_/backbones/attnet_t2.py) and the weight decay of its
# layer scales differ.
_base_ = ['./mask_rcnn_swin_t_3x.py', '_base_/backbones/attnet_t2.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True),
             neck=dict(in_channels=[64, 128, 288, 512]))
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys=dict(
            layer_scale=dict(decay_mult=0.), inhibition_logit=dict(decay_mult=0.))))
