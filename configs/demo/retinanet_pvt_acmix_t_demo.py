# RetinaNet PVT-ACmix-T on the bundled demo data (tools/make_demo_data.py), a short
# schedule for 2 CPU cores. The paper config's backbone and detector with the 3 demo
# classes, no ImageNet weights (they would need a download) and a neck and head of 128
# channels instead of 256: the head's 3x3 convolutions at stride 8 took a third of the
# step, and at 128 channels a step takes under two thirds of the time on 2 cores.
# From scratch, 6 epochs of 120 iterations (2 images each) at 256x256 (the demo images
# are 320x320, shapes of radius 18-70 px). GroupNorm in the neck and head, as usual for
# detectors trained from scratch (He et al., "Rethinking ImageNet Pre-training"), and
# more, smaller steps: without them the same time left triangles hardly learnt. What it
# reached, and in what time, is in benchmarks/results/demo.jsonl (bash tools/demo.sh).
# Runs repeat exactly on one machine; the seed is fixed: from scratch, a transformer at
# this learning rate diverges on some seeds (seen once at lr 1e-3 with warm-up 100).
_base_ = '../retinanet_pvt_acmix_t_1x.py'

data_root = 'data/demo/coco/'
metainfo = dict(classes=('circle', 'square', 'triangle'))
image_scale = (256, 256)

# From scratch, so the official initial rates (0.5, 0.5) rather than the paper
# configs' (1, 0), which only make sense on top of pretrained PVT weights.
model = dict(
    backbone=dict(init_cfg=None, rate_init=(0.5, 0.5)),
    neck=dict(out_channels=128, norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
    bbox_head=dict(
        num_classes=3,
        in_channels=128,
        feat_channels=128,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_epochs = 6
# One evaluation, at the end (tools/test.py gives the same): each one costs as much
# as eight training steps (3.6 s against 0.45 s, AMD EPYC, 2 cores).
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=0.0008), clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=300),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5)
]
default_hooks = dict(
    logger=dict(interval=20), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(window_size=20)
randomness = dict(seed=0)
