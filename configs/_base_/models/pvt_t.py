# mmdet's PVT-T backbone of the baseline configs, defined once, starting from the
# official PVT-T ImageNet weights (converted on load by mmdet). Replaces any base backbone.
pvt_t = dict(
    _delete_=True,
    type='mmdet.PyramidVisionTransformer',
    num_layers=[2, 2, 2, 2],
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_tiny.pth'))
