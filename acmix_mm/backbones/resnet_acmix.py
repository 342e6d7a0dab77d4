"""ResNet-ACmix: ResNet whose 3x3 convolutions are ACmix (paper Table 9).

:class:`BottleneckACmix` is mmdet's bottleneck with its 3x3 convolution replaced by the
NCHW :class:`~acmix_mm.layers.ACmix` (sliding-window attention, k_att 7, 4 heads,
k_conv 3), carrying the stride as the official code (torchvision's "v1.5" placement);
:class:`ResNetACmix` is mmdet's ResNet built from it, so every mmdet ResNet argument
works. :func:`resnet_official_to_acmix` converts the official ResNet-ACmix state dict.
"""
import re
from collections import OrderedDict

from mmdet.models.backbones.resnet import Bottleneck, ResNet
from mmdet.models.layers import ResLayer
from torch import nn

from ..checkpoint import join_projections, rename_key
from ..errors import ConfigError
from ..layers import ACmix
from ..registry import register_model
from .base import OfficialCheckpointMixin, register_official_layout


class BottleneckACmix(Bottleneck):
    """mmdet's Bottleneck with ACmix in place of the 3x3 convolution.

    Args:
        kernel_att (int): Attention window side. Default: 7.
        head (int): Attention heads. Default: 4.
        kernel_conv (int): Kernel of the convolution path. Default: 3.
        rate_init (tuple[float]): Initial (alpha, beta). Default: (0.5, 0.5).
        **kwargs: Arguments of mmdet's ``Bottleneck`` (``dcn`` and ``plugins`` are not
            supported: ACmix replaces the layer they would modify).
    """

    def __init__(self, *args, kernel_att=7, head=4, kernel_conv=3, rate_init=(0.5, 0.5),
                 **kwargs):
        if kwargs.get('dcn') is not None or kwargs.get('plugins'):
            raise ConfigError('ResNetACmix does not support dcn or plugins: ACmix '
                             'replaces the 3x3 convolution they would modify.')
        super().__init__(*args, **kwargs)
        if self.style != 'pytorch':
            raise ConfigError("ResNetACmix needs style='pytorch' (stride in the 3x3 "
                             "layer), as the official model.")
        if self.dilation != 1:
            raise ConfigError('ResNetACmix supports dilation 1 only.')
        self.conv2 = ACmix(
            self.planes,
            self.planes,
            kernel_att=kernel_att,
            head=head,
            kernel_conv=kernel_conv,
            stride=self.conv2_stride,
            rate_init=rate_init)


@register_model
class ResNetACmix(OfficialCheckpointMixin, ResNet):
    """ResNet-ACmix backbone (paper Table 9), for mmdet and mmseg.

    Args:
        depth (int): 26, 38 or 50.
        kernel_att (int): Attention window side of every ACmix. Default: 7.
        head (int): Attention heads of every ACmix. Default: 4.
        kernel_conv (int): Kernel of every ACmix convolution path. Default: 3.
        rate_init (tuple[float]): Initial (alpha, beta). Default: (0.5, 0.5).
        zero_init_residual (bool): Zero-init the last norm of each block. Default:
            False, as the official model.
        convert_weights (bool): Accept the official ResNet-ACmix layout in
            ``init_cfg`` and convert it on load. Default: True.
        init_cfg (dict | list[dict], optional): Default: Kaiming (fan_out) for every
            convolution and projection and constant 1 for norms, as the official
            model; ``dict(type='Pretrained', checkpoint=...)`` loads an official or
            converted checkpoint.
        **kwargs: Every other argument of mmdet's ``ResNet`` (``out_indices``,
            ``frozen_stages``, ``norm_cfg``, ``norm_eval``, ``with_cp``, ...).
    """
    official_layout = 'official ResNet-ACmix'
    # The sliding-window attention cuts the map into blocks by its size: an exported
    # graph holds for the size it was exported at only (acmix_mm.deploy).
    min_free_side = None
    acmix_only_keys = ()  # the official ResNet-ACmix checkpoints hold every weight
    arch_settings = {
        26: (BottleneckACmix, (1, 2, 4, 1)),
        38: (BottleneckACmix, (2, 3, 5, 2)),
        50: (BottleneckACmix, (3, 4, 6, 3)),
    }

    def __init__(self,
                 depth,
                 kernel_att=7,
                 head=4,
                 kernel_conv=3,
                 rate_init=(0.5, 0.5),
                 zero_init_residual=False,
                 convert_weights=True,
                 init_cfg=None,
                 **kwargs):
        if depth not in self.arch_settings:
            raise ConfigError(f'Unknown ResNetACmix depth {depth!r}; choose one of '
                             f'{sorted(self.arch_settings)}.')
        if 'pretrained' in kwargs:
            raise ConfigError("ResNetACmix takes init_cfg=dict(type='Pretrained', "
                             "checkpoint=...) instead of pretrained=.")
        if kwargs.get('deep_stem') or kwargs.get('avg_down'):
            raise ConfigError('ResNetACmix keeps the plain ResNet stem and shortcut '
                             '(deep_stem and avg_down are not supported).')
        self.acmix_cfg = dict(
            kernel_att=kernel_att, head=head, kernel_conv=kernel_conv, rate_init=rate_init)
        self.convert_weights = convert_weights
        if init_cfg is None:
            init_cfg = [
                dict(type='Kaiming', layer=['Conv2d', 'Linear']),
                dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
            ]
        super().__init__(
            depth, zero_init_residual=zero_init_residual, init_cfg=init_cfg, **kwargs)

    def make_res_layer(self, **kwargs):
        return ResLayer(**kwargs, **self.acmix_cfg)

    def train(self, mode=True):
        # mmdet's ResNet.train() returns None; a module's train() returns the module.
        super().train(mode)
        return self

    def _freeze_stages(self):
        super()._freeze_stages()
        if self.frozen_stages >= 0:  # mmdet leaves the frozen stem conv in train mode
            self.conv1.eval()

    def init_weights(self):
        # The generic init reaches the ACmix layers, which restore their shift
        # kernels and rates in their own init_weights afterwards.
        if not self.load_pretrained_init_cfg():
            super().init_weights()
            if self.zero_init_residual:
                # mmdet's ResNet zeroes norm3 only for its own Bottleneck and default
                # init_cfg, so it would never happen here.
                for block in self.modules():
                    if isinstance(block, BottleneckACmix):
                        nn.init.zeros_(block.norm3.weight)


def is_official_resnet_acmix(state_dict):
    """Whether a state dict is in the layout of the official ResNet-ACmix code."""
    # conv_p (its position encoding) and rate1; ours has conv_path, which the pattern
    # must not take for conv_p.
    return any(re.search(r'conv2\.(conv_p\.|rate1$)', k) for k in state_dict)


def resnet_official_to_acmix(state_dict):
    """Convert an official ResNet-ACmix state dict (LeapLabTHU/ACmix) to ours.

    The three 1x1 projections (conv1, conv2, conv3 of each ACmix) become the shared
    projection ``qkv``; ``conv_p`` becomes the position projection. Its bias is left out:
    the official operator adds ``pe(query) - pe(key)``, where the bias cancels, so it
    has never changed an output. The ImageNet classifier ``fc`` is left out too.

    Returns:
        tuple: the converted state dict and a list of ``'key: reason'`` for the left
        out tensors. Keys that match no rule are kept unchanged, so that loading
        reports them.
    """
    acmix = r'^(layer\d+\.\d+\.conv2\.)'
    renames = (
        (acmix + r'conv1\.', r'\1qkv.'),
        (acmix + r'conv_p\.weight$', r'\1attn_path.position_proj.weight'),
        (acmix + r'(fc|dep_conv)\.', r'\1conv_path.\2.'),
        (acmix + r'rate1$', r'\1alpha'),
        (acmix + r'rate2$', r'\1beta'),
    )
    converted, discarded = OrderedDict(), []
    for key, value in state_dict.items():
        if key.startswith('fc.'):
            discarded.append(f'{key}: ImageNet classifier, not part of a backbone')
            continue
        if re.match(acmix + r'conv_p\.bias$', key):
            discarded.append(f'{key}: cancels in pe(query) - pe(key); never used')
            continue
        if re.match(acmix + r'conv[23]\.', key):
            continue  # joined with conv1
        new_key = rename_key(key, renames)
        if re.match(acmix + r'conv1\.', key):
            value = join_projections(state_dict, [key.replace('.conv2.conv1.', f'.conv2.conv{i}.')
                                                  for i in (1, 2, 3)])
        elif new_key.endswith('position_proj.weight'):
            value = value.flatten(1)  # a 1x1 convolution -> a linear layer
        converted[new_key] = value
    return converted, discarded


register_official_layout('official ResNet-ACmix', 'ResNetACmix', is_official_resnet_acmix,
                         resnet_official_to_acmix)
