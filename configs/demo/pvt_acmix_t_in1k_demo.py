# PVT-ACmix-T ImageNet-style classification on the bundled ImageNet-layout demo data
# (tools/make_demo_data.py: 3 classes, 128x128 images), a short schedule for 2 CPU
# cores. The model of configs/pretrain/pvt_acmix_t_in1k.py with 3 classes and position
# embeddings sized for 128x128 inputs; the data pipelines are shortened (no RandAugment,
# random erasing, Mixup or CutMix, which a few hundred steps cannot make use of) and
# top-5 is left out (3 classes). Its checkpoint feeds the downstream demo configs as the
# real one feeds the paper configs, e.g. retinanet_pvt_acmix_t_demo.py with
#   --cfg-options model.backbone.init_cfg.type=Pretrained
#   model.backbone.init_cfg.checkpoint=work_dirs/pvt_acmix_t_in1k_demo/epoch_10.pth
_base_ = '../pretrain/pvt_acmix_t_in1k.py'

data_root = 'data/demo/imagenet'
metainfo = dict(classes=('circle', 'square', 'triangle'))
image_size = 128

model = dict(
    backbone=dict(pretrain_img_size=image_size),
    head=dict(num_classes=3),
    train_cfg=dict(_delete_=True))
data_preprocessor = dict(num_classes=3)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=image_size, crop_ratio_range=(0.5, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=image_size, edge='short'),
    dict(type='CenterCrop', crop_size=image_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root, split='train', metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, split='val', metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_epochs = 10
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5)
]
default_hooks = dict(
    logger=dict(interval=5), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
