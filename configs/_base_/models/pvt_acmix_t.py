# The PVT-ACmix-T backbone of the paper configs, defined once. PVT-ACmix ImageNet weights
# were never released: it loads the official PVT-T ImageNet checkpoint (converted on
# load) with (alpha, beta) = (1, 0), so that at step 0 it computes exactly that PVT; the
# shift-initialised convolution path is learnt from there. Replaces any base backbone.
pvt_acmix_t = dict(
    _delete_=True,
    type='PVTACmix',
    arch='tiny',
    rate_init=(1.0, 0.0),
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://github.com/whai362/PVT/releases/download/v2/pvt_tiny.pth'))
