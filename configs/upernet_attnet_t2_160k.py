# UperNet with AttNet-T2 on ADE20K, beside upernet_swin_acmix_t_160k.py: Swin's 160k
# recipe, only the backbone (and the weight decay of its layer scales) differs.
_base_ = ['./upernet_swin_t_160k.py', '_base_/models/attnet.py']
model = dict(
    backbone={{_base_.seg_attnet_t2}},
    decode_head=dict(in_channels=[64, 128, 288, 512]),
    auxiliary_head=dict(in_channels=288))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.attnet_no_decay}}))
