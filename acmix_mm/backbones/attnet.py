"""AttNet: the attentive-convolution network (Yu et al., 2025), for mmdet and mmseg.

AttNet is a four-stage convolutional network at strides 4-32 whose blocks mix tokens
with ATConv (a 3x3 depthwise convolution with kernels generated per image, see
``layers/atconv.py``) and channels with a gated FFN. It sits beside the ACmix backbones
so that the two operators can be compared config for config.

Layering, small to large: :class:`AttNetBlock` (norm, ATConv, layer scale; norm, gated
FFN, layer scale) -> :class:`AttNetStage` (strided conv-BN downsampling, or the two-conv
stem in the first stage, then blocks) -> :class:`AttNet`. :func:`attnet_official_to_ours`
converts the official checkpoints (price112/Attentive-Convolution, ``models/AttNet.py``).
"""
import re
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule
from mmcv.cnn.bricks.drop import build_dropout
from mmengine.model import BaseModule, ModuleList, Sequential
from mmengine.model.weight_init import constant_init, trunc_normal_init
from torch.nn.modules.batchnorm import _BatchNorm

from ..checkpoint import rename_key
from ..errors import ConfigError
from ..layers.atconv import ATConv, GatedConvFFN, LayerNorm2d, LayerScale2d
from ..registry import register_model
from .base import ACmixBackbone, register_official_layout


class AttNetBlock(BaseModule):
    """One AttNet block: ``x + ls1(ATConv(norm1(x)))``, then ``x + ls2(FFN(norm2(x)))``.

    Args:
        embed_dims (int): Channels C.
        ffn_ratio (float): Expansion of the FFN before gating; each gated half has
            ``int(2 * int(C * ffn_ratio) / 3)`` channels. Default: 4.
        kernel_size (int): ATConv kernel side. Default: 3.
        ffn_norm (bool): RMS norm inside the FFN. Default: True.
        layer_scale (bool): Learned per-channel scales (from 1e-6) on both
            branches. Default: True.
        drop_path_rate (float): Stochastic depth rate. Default: 0.
        act_cfg (dict): Activation in ATConv and the FFN. Default: dict(type='GELU').
        with_cp (bool): Gradient checkpointing. Default: False.
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 embed_dims,
                 ffn_ratio=4,
                 kernel_size=3,
                 ffn_norm=True,
                 layer_scale=True,
                 drop_path_rate=0.,
                 act_cfg=dict(type='GELU'),
                 with_cp=False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.with_cp = with_cp
        self.norm1 = LayerNorm2d(embed_dims)
        self.attn = ATConv(embed_dims, kernel_size=kernel_size, act_cfg=act_cfg)
        self.norm2 = LayerNorm2d(embed_dims)
        # The official width: a 2/3 share of C * ffn_ratio, so that the gated FFN's
        # two halves cost about what a plain FFN of that ratio costs.
        hidden_dims = int(2 * int(embed_dims * ffn_ratio) / 3)
        self.ffn = GatedConvFFN(
            embed_dims, hidden_dims, with_norm=ffn_norm, act_cfg=act_cfg)
        self.layer_scale1 = LayerScale2d(embed_dims) if layer_scale else nn.Identity()
        self.layer_scale2 = LayerScale2d(embed_dims) if layer_scale else nn.Identity()
        self.drop_path = build_dropout(dict(type='DropPath', drop_prob=drop_path_rate))

    def forward(self, x):

        def _inner_forward(x):
            x = x + self.drop_path(self.layer_scale1(self.attn(self.norm1(x))))
            return x + self.drop_path(self.layer_scale2(self.ffn(self.norm2(x))))

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(_inner_forward, x, use_reentrant=False)
        return _inner_forward(x)


class AttNetStage(BaseModule):
    """Downsampling by 2 (a 3x3 stride-2 conv and BN), then AttNet blocks.

    The first stage downsamples by 4 with a stem instead: conv-BN-activation to half
    the width, then conv-BN, both 3x3 with stride 2.

    Args:
        in_channels (int): Input channels.
        embed_dims (int): Channels of the stage.
        depth (int): Number of blocks.
        stem (bool): Whether this is the first stage (stem downsampling).
        block_cfg (dict): Arguments of every :class:`AttNetBlock` but ``embed_dims``
            and ``drop_path_rate``.
        drop_path_rates (Sequence[float]): One stochastic depth rate per block.
        norm_cfg (dict): Norm after the downsampling convolutions.
            Default: dict(type='BN').
        act_cfg (dict): Activation inside the stem. Default: dict(type='GELU').
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 in_channels,
                 embed_dims,
                 depth,
                 stem,
                 block_cfg,
                 drop_path_rates,
                 norm_cfg=dict(type='BN'),
                 act_cfg=dict(type='GELU'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)

        def conv_bn(in_dims, out_dims, act=None):
            return ConvModule(in_dims, out_dims, 3, stride=2, padding=1,
                              norm_cfg=norm_cfg, act_cfg=act)

        if stem:
            self.downsample = Sequential(
                conv_bn(in_channels, embed_dims // 2, act_cfg),
                conv_bn(embed_dims // 2, embed_dims))
        else:
            self.downsample = conv_bn(in_channels, embed_dims)
        self.blocks = Sequential(*[
            AttNetBlock(embed_dims, drop_path_rate=rate, **block_cfg)
            for rate in drop_path_rates[:depth]
        ])

    def forward(self, x):
        return self.blocks(self.downsample(x))


@register_model
class AttNet(ACmixBackbone):
    """AttNet backbone (Yu et al., 2025, "Attentive Convolution"), for mmdet and mmseg.

    The official ``AttNet`` without its classifier (final norm and head): stage i's
    output (stride 4 * 2**i) is what the official network computes after its stage i.

    Args:
        arch (str | dict): 'xxs', 'xs', 's', 't1', 't2', 't3' or 't4' (the official
            sizes; T1 and T2 sit beside PVT-ACmix-T and Swin-ACmix-T in our configs), or
            a dict with keys ``depths``, ``embed_dims``, ``ffn_ratios``, ``ffn_norm``,
            ``layer_scale``. Default: 't1'.
        in_channels (int): Input image channels. Default: 3.
        kernel_size (int): ATConv kernel side. Default: 3.
        out_indices (Sequence[int]): Stages whose outputs are returned.
            Default: (0, 1, 2, 3).
        drop_path_rate (float): Stochastic depth rate, increasing linearly over the
            blocks up to this value. Default: 0.1.
        act_cfg (dict): Activation of the stem, ATConv and the FFNs.
            Default: dict(type='GELU').
        norm_cfg (dict): Norm of the downsampling convolutions (the blocks use
            LayerNorm and RMS norm). Default: dict(type='BN', requires_grad=True).
        frozen_stages (int): -1 freezes nothing, 0 the stem (stage 0's downsampling
            convolutions), i > 0 the stem and the first i stages (each with its
            downsampling); frozen parts stay in eval mode. Default: -1.
        norm_eval (bool): Keep the BatchNorm layers in eval mode during training.
            Default: False.
        with_cp (bool): Gradient checkpointing of each block. Default: False.
        convert_weights (bool): Accept the official AttNet checkpoint layout in
            ``init_cfg`` and convert it on load. Default: True.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=...)`` with an
            official AttNet ImageNet checkpoint or one of ours. Default: None.
    """
    _small = dict(ffn_ratios=[8, 8, 4, 4], ffn_norm=False)
    _tiny = dict(ffn_ratios=[8, 8, 4, 4], ffn_norm=True, layer_scale=True)
    arch_zoo = {
        'xxs': dict(_small, depths=[2, 2, 4, 2], embed_dims=[32, 64, 128, 240],
                    layer_scale=False),
        'xs': dict(_small, depths=[2, 2, 7, 2], embed_dims=[40, 80, 160, 320],
                   layer_scale=True),
        's': dict(_small, depths=[2, 3, 10, 3], embed_dims=[40, 80, 160, 320],
                  layer_scale=False),
        't1': dict(_tiny, depths=[2, 3, 12, 3], embed_dims=[48, 96, 224, 384]),
        't2': dict(_tiny, depths=[3, 3, 16, 3], embed_dims=[64, 128, 288, 512]),
        't3': dict(_tiny, depths=[4, 4, 26, 4], embed_dims=[72, 144, 320, 576]),
        't4': dict(_tiny, depths=[5, 5, 28, 5], embed_dims=[96, 192, 384, 768]),
    }
    arch_keys = ('depths', 'embed_dims', 'ffn_ratios', 'ffn_norm', 'layer_scale')
    official_layout = 'official AttNet'
    # The attentive convolution's gathers index the map by its size: an exported graph
    # holds for the size it was exported at only (acmix_mm.deploy).
    min_free_side = None
    acmix_only_keys = ()

    def __init__(self,
                 arch='t1',
                 in_channels=3,
                 kernel_size=3,
                 out_indices=(0, 1, 2, 3),
                 drop_path_rate=0.1,
                 act_cfg=dict(type='GELU'),
                 norm_cfg=dict(type='BN', requires_grad=True),
                 frozen_stages=-1,
                 norm_eval=False,
                 with_cp=False,
                 convert_weights=True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        arch = self.resolve_arch(arch)
        depths = arch['depths']
        if not len(depths) == len(arch['embed_dims']) == len(arch['ffn_ratios']):
            raise ConfigError('An AttNet arch needs as many embed_dims and ffn_ratios '
                             f'as depths, got {arch!r}.')
        if kernel_size % 2 != 1:
            raise ConfigError(f'AttNet needs an odd kernel_size, got {kernel_size}.')
        self.out_indices = self.check_out_indices(out_indices, len(depths))
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.convert_weights = convert_weights

        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = ModuleList()
        channels, start = in_channels, 0
        for i, depth in enumerate(depths):
            self.stages.append(
                AttNetStage(
                    channels,
                    arch['embed_dims'][i],
                    depth,
                    stem=i == 0,
                    block_cfg=dict(
                        ffn_ratio=arch['ffn_ratios'][i],
                        kernel_size=kernel_size,
                        ffn_norm=arch['ffn_norm'],
                        layer_scale=arch['layer_scale'],
                        act_cfg=act_cfg,
                        with_cp=with_cp),
                    drop_path_rates=rates[start:start + depth],
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg))
            channels, start = arch['embed_dims'][i], start + depth
        self.num_features = [arch['embed_dims'][i] for i in self.out_indices]
        self._freeze_stages()

    def arch_choices(self):
        return list(self.arch_zoo)

    def stem_parts(self):
        return [self.stages[0].downsample]

    warn_from_scratch = True

    def init_from_scratch(self):
        # The official initialisation; layer scales (1e-6), ATConv's inhibition (0)
        # and the RMS norms (1) keep theirs.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                trunc_normal_init(m, std=.02, bias=0.)
            elif isinstance(m, (_BatchNorm, nn.LayerNorm)):
                constant_init(m, 1.0, bias=0.)

    def forward(self, x):
        outs = []
        for i in range(max(self.out_indices) + 1):  # no stage past the last output
            x = self.stages[i](x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


def is_official_attnet(state_dict):
    """Whether a state dict is in the layout of the official AttNet code."""
    return any(re.match(r'stages\.\d+\.\d+\.token_mixer\.', k) for k in state_dict)


def attnet_official_to_ours(state_dict):
    """Convert an official AttNet state dict (price112/Attentive-Convolution) to ours.

    ``downsample_layers.i`` becomes stage i's ``downsample`` (the stem in stage 0),
    ``stages.i.j`` stage i's ``blocks.j`` with the token mixer as ``attn`` and the
    channel mixer as ``ffn``. The classifier (``norm``, ``head``) is left out.

    Returns:
        tuple: the converted state dict and a list of ``'key: reason'`` for the left
        out tensors. Keys that match no rule are kept unchanged, so that loading
        reports them.
    """
    block, ours = r'^stages\.(\d+)\.(\d+)\.', r'stages.\1.blocks.\2.'
    renames = (
        (r'^downsample_layers\.0\.0\.0\.', 'stages.0.downsample.0.conv.'),
        (r'^downsample_layers\.0\.0\.1\.', 'stages.0.downsample.0.bn.'),
        (r'^downsample_layers\.0\.2\.0\.', 'stages.0.downsample.1.conv.'),
        (r'^downsample_layers\.0\.2\.1\.', 'stages.0.downsample.1.bn.'),
        (r'^downsample_layers\.(\d+)\.0\.', r'stages.\1.downsample.conv.'),
        (r'^downsample_layers\.(\d+)\.1\.', r'stages.\1.downsample.bn.'),
        (block + r'token_mixer\.(kernel_proj|kernel_gen)\.', ours + r'attn.\3.'),
        (block + r'token_mixer\.x_proj\.', ours + 'attn.value_proj.'),
        (block + r'token_mixer\.proj\.', ours + 'attn.out_proj.'),
        (block + r'token_mixer\.difference_control$', ours + 'attn.inhibition_logit'),
        (block + r'channel_mixer\.(fc1|dwconv|fc2)\.', ours + r'ffn.\3.'),
        (block + r'channel_mixer\.norm_layer\.', ours + 'ffn.norm.'),
        (block + r'norm_(\d)\.', ours + r'norm\3.'),
        (block + r'layer_scale_(\d)\.', ours + r'layer_scale\3.'),
    )
    converted, discarded = OrderedDict(), []
    for key, value in state_dict.items():
        if key.startswith(('norm.', 'head.', 'head_dist.')):
            discarded.append(f'{key}: ImageNet classifier, not part of a backbone')
            continue
        new_key = rename_key(key, renames)
        converted[new_key] = value
    return converted, discarded


register_official_layout('official AttNet', 'AttNet', is_official_attnet, attnet_official_to_ours)
