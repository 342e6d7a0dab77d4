# Baseline: Cascade Mask R-CNN with mmdet's Swin-T, 3x schedule (paper Table 4: 750
# GFLOPs; the Swin paper's row: 745 GFLOPs, 50.5 box mAP). Swin's published cascade
# recipe: box heads with 4 shared convolutions (SyncBN) and 1 fc, GIoU loss on decoded
# boxes; the training recipe of mask_rcnn_swin_t_3x.py.
_base_ = [
    '_base_/models/cascade_mask_rcnn_r50_fpn.py',
    '_base_/datasets/coco_instance_ms_crop.py', '_base_/schedules/schedule_swin_3x.py',
    '_base_/default_runtime.py', '_base_/models/swin.py'
]
model = dict(
    backbone={{_base_.swin_t}},
    neck=dict(in_channels=[96, 192, 384, 768]),
    roi_head=dict(bbox_head=[
        dict(
            type='Shared4Conv1FCBBoxHead',
            in_channels=256,
            conv_out_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=stds),
            reg_class_agnostic=False,
            reg_decoded_bbox=True,
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
        for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                     [0.033, 0.033, 0.067, 0.067])
    ]))
