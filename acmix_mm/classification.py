"""What ImageNet classification (mmpretrain, configs/pretrain) needs beyond the
backbones: the pooling neck of backbones that have no final norm."""
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule

from .registry import register_model


@register_model
class NormGlobalAveragePooling(BaseModule):
    """A norm over the channels of the last feature map, then global average pooling.

    For transformer backbones built for dense prediction (mmdet's PVT v1), whose stage
    outputs have no final norm: their ImageNet classifiers normalise the last tokens
    before reading them. Takes the backbone's tuple of NCHW maps and pools the last.

    Args:
        in_channels (int): Channels of the last map.
        norm_cfg (dict): The norm, applied per position. Default: dict(type='LN',
            eps=1e-6) (PVT's).
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self, in_channels, norm_cfg=dict(type='LN', eps=1e-6), init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.norm = build_norm_layer(norm_cfg, in_channels)[1]

    def forward(self, inputs):
        last = inputs[-1] if isinstance(inputs, (tuple, list)) else inputs
        tokens = self.norm(last.flatten(2).transpose(1, 2))  # (N, HW, C)
        return (tokens.mean(1), )
