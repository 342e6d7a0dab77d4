# RetinaNet ResNet-50-ACmix, 3x schedule (not in the paper): the 3x recipe of
# retinanet_pvt_t_3x.py (36 epochs, lr steps at 27 and 33, multi-scale training with the
# shorter side 640-800) with the model and SGD optimizer of retinanet_r50_acmix_1x.py.
_base_ = ['./retinanet_pvt_t_3x.py', '_base_/backbones/resnet50_acmix.py']
model = dict(backbone=dict(_base_.pop('backbone'), _delete_=True),
             neck=dict(in_channels=[256, 512, 1024, 2048]))
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
