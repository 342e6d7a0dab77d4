# PVT-ACmix-T (paper Table 11) on ImageNet-1k, beside pvt_t_in1k.py: the same recipe,
# only the backbone differs; its final norm (final_norm=True, as PVT's classifier) comes
# before the pooling. The checkpoint feeds the PVT-ACmix-T detection and segmentation
# configs, the final norm left out (their backbone has none):
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/pvt_acmix_t_in1k/epoch_300.pth
_base_ = './pvt_t_in1k.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='PVTACmix',
        arch='tiny',
        out_indices=(3, ),
        final_norm=True,
        drop_path_rate=0.1),
    neck=dict(_delete_=True, type='GlobalAveragePooling'))
