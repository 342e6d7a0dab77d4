# AttNet-T2 (26.5M backbone params; Swin-T has 27.5M; channels 64, 128, 288 and 512):
# attnet_t1.py's weights and BatchNorms, drop path 0.2, as Swin-T's detection recipes and
# AttNet-T2's ImageNet training (the segmentors set 0.3).
_base_ = './attnet_t1.py'
backbone = dict(
    arch='t2', drop_path_rate=0.2,
    init_cfg=dict(checkpoint='checkpoints/AttNet_T2.pth'))
