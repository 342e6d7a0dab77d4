# UperNet with AttNet-T2 on ADE20K, beside upernet_swin_acmix_t_160k.py: Swin's 160k
# recipe, only the backbone (and the weight decay of its layer scales) differs. Weights
# and BatchNorms as in retinanet_attnet_t1_1x.py; drop path 0.3, as Swin-T's UperNet.
_base_ = './upernet_swin_t_160k.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='AttNet',
        arch='t2',
        drop_path_rate=0.3,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/AttNet_T2.pth')),
    decode_head=dict(in_channels=[64, 128, 288, 512]),
    auxiliary_head=dict(in_channels=288))
# No weight decay on the layer scales and ATConv's inhibition strengths, as in AttNet's
# ImageNet training (norms are already excluded by Swin's recipe).
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys=dict(
            layer_scale=dict(decay_mult=0.), inhibition_logit=dict(decay_mult=0.))))
