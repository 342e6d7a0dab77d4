# UperNet with AttNet-T2 on ADE20K, beside upernet_swin_acmix_t_160k.py: Swin's 160k
# recipe, only the backbone (_base_/backbones/attnet_t2.py, with drop path 0.3, as
# Swin-T's UperNet) and the weight decay of its layer scales differ.
_base_ = ['./upernet_swin_t_160k.py', '_base_/backbones/attnet_t2.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True, drop_path_rate=0.3),
             decode_head=dict(in_channels=[64, 128, 288, 512]),
             auxiliary_head=dict(in_channels=288))
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys=dict(
            layer_scale=dict(decay_mult=0.), inhibition_logit=dict(decay_mult=0.))))
