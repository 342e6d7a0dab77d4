# Baseline: RetinaNet with mmdet's ResNet-50 (paper Table 3: 250 GFLOPs, 36.7 mAP at 1x).
# mmdet's recipe: COCO 2017, 12 epochs, SGD lr 0.01, 8 GPUs x 2 images, 1333x800,
# torchvision ImageNet weights.
_base_ = [
    '_base_/models/retinanet_r50_fpn.py', '_base_/datasets/coco_detection.py',
    '_base_/schedules/schedule_1x.py', '_base_/default_runtime.py'
]
optim_wrapper = dict(optimizer=dict(lr=0.01))
