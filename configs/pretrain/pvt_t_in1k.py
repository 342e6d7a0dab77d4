# PVT-T (PVT v1, Wang et al., ICCV 2021) on ImageNet-1k with the PVT paper's recipe,
# which ACmix's Appendix B follows for PVT-ACmix. PVT trains as DeiT does, and so does
# Swin, so this is mmpretrain's Swin-T config with what PVT does differently:
# AdamW, lr 5e-4 x 1024 / 512 = 1e-3 at batch 1024 (8 GPUs x 128), weight decay 0.05
# (none on norms, biases and position embeddings), 300 epochs of cosine decay to 1e-5
# after 5 warm-up epochs, no gradient clipping, drop path 0.1, and DeiT's augmentation
# (random resized crop, flip, RandAugment m9-mstd0.5, random erasing 0.25, Mixup 0.8,
# CutMix 1.0, label smoothing 0.1).
# The backbone is mmdet's PVT v1, as in the detection baselines. PVT v1's classifier
# reads a class token after a final norm; mmdet's PVT has neither, so the head pools the
# last stage after that norm (NormGlobalAveragePooling).
_base_ = './swin_t_in1k.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdet.PyramidVisionTransformer',
        num_layers=[2, 2, 2, 2],
        out_indices=(3, ),
        drop_path_rate=0.1),
    neck=dict(_delete_=True, type='NormGlobalAveragePooling', in_channels=512),
    head=dict(in_channels=512))
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = dict(batch_size=128)
optim_wrapper = dict(
    clip_grad=None, paramwise_cfg=dict(custom_keys={'.pos_embed': dict(decay_mult=0.0)}))
warmup_epochs = 5
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs)
]
