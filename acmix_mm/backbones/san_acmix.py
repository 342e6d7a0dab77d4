"""SAN-ACmix and SAN: self-attention networks with patchwise attention (paper Table 10).

SAN (Zhao et al., CVPR 2020) is a ResNet-like network of five stages (a 2x2 max pool, a
1x1 transition convolution, residual blocks, a norm) whose blocks replace the 3x3
convolution by patchwise self-attention. In SAN-ACmix that attention is an ACmix
operator: q and k are projected to a quarter of the block's middle width C, v to C and
read as four pieces of C/4 by the convolution path, which thus emulates a k_c x k_c
convolution from the very same projection (paper Appendix C). :class:`SAN` is the same
network without the convolution path, the baseline of the paper's Table 3.
:func:`san_official_to_acmix` converts checkpoints of the official SAN code (hszhao/SAN,
patchwise), so SAN-ACmix can start from SAN's ImageNet weights.
"""
import re
from collections import OrderedDict

import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule, Sequential

from ..checkpoint import join_projections, rename_key
from ..errors import ConfigError
from ..layers import TokenACmix
from ..layers.batch_norm import build_norm
from ..ops.max_pool import max_pool2x2
from ..registry import register_model
from .base import ACmixBackbone, register_official_layout


class SANBlock(BaseModule):
    """SAN's residual block: norm, ReLU, (ACmix) patchwise attention, norm, ReLU, 1x1.

    Args:
        channels (int): Input and output channels; the attention works on
            ``channels // 4`` and projects q and k to ``channels // 16``.
        kernel_att (int): Patch side k_a of the attention. Default: 7.
        kernel_conv (int): Kernel k_c of the convolution path. Default: 3.
        share_planes (int): Value channels sharing one attention weight. Default: 8.
        with_conv_path (bool): ACmix (True) or SAN's attention alone. Default: True.
        rate_init (tuple[float]): Initial (alpha, beta) of ACmix. Default: (0.5, 0.5).
        norm_cfg (dict): Config of every norm. Default: dict(type='BN').
        with_cp (bool): Checkpoint the block to save memory. Default: False.
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 channels,
                 kernel_att=7,
                 kernel_conv=3,
                 share_planes=8,
                 with_conv_path=True,
                 rate_init=(0.5, 0.5),
                 norm_cfg=dict(type='BN'),
                 with_cp=False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        mid_channels = channels // 4
        self.with_cp = with_cp
        self.norm1 = build_norm(norm_cfg, channels)
        # v in 4 pieces of C/4, the width of q and of k (Appendix C).
        self.attn = TokenACmix(
            mid_channels,
            num_heads=4,
            attn_path=dict(
                type='PatchwiseAttentionPath',
                kernel_size=kernel_att,
                share_planes=share_planes,
                norm_cfg=norm_cfg),
            in_dims=channels,
            qk_dims=mid_channels // 4,
            with_conv_path=with_conv_path,
            kernel_conv=kernel_conv,
            fc_bias=False,
            rate_init=rate_init)
        self.norm2 = build_norm(norm_cfg, mid_channels)
        self.conv = nn.Conv2d(mid_channels, channels, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):

        def _inner_forward(x):
            batch, _, height, width = x.shape
            out = self.relu(self.norm1(x))
            out = self.attn(out.flatten(2).transpose(1, 2), (height, width))
            # a channels-last view of the tokens (mmdet's nlc_to_nchw would copy them)
            out = out.transpose(1, 2).reshape(batch, -1, height, width)
            out = self.conv(self.relu(self.norm2(out)))
            return out + x

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(_inner_forward, x, use_reentrant=False)
        return _inner_forward(x)


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2, 2)`` that runs the native pool where it is built
    (:func:`~acmix_mm.ops.max_pool.max_pool2x2`: a byte of argmax per output instead of
    torch's int64 index, and no zero-filled gradient to scatter into)."""

    def __init__(self):
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x):
        return max_pool2x2(x)


class SANStage(BaseModule):
    """2x2 max pool, 1x1 transition convolution, blocks, norm and ReLU.

    Args:
        in_channels (int): Input channels.
        channels (int): Channels of the stage.
        num_blocks (int): Number of blocks.
        norm_cfg (dict): Config of the norms. Default: dict(type='BN').
        **block_kwargs: Arguments of :class:`SANBlock`.
    """

    def __init__(self, in_channels, channels, num_blocks, norm_cfg=dict(type='BN'),
                 **block_kwargs):
        super().__init__()
        self.pool = MaxPool2x2()
        self.transition = nn.Conv2d(in_channels, channels, kernel_size=1, bias=False)
        self.blocks = Sequential(*[
            SANBlock(channels, norm_cfg=norm_cfg, **block_kwargs)
            for _ in range(num_blocks)
        ])
        self.norm = build_norm(norm_cfg, channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x, relu_input=False):
        """``relu_input`` applies a ReLU to the input after the pool, which equals the
        ReLU before it (max and ReLU commute, gradients included) on a quarter of the
        pixels."""
        x = self.pool(x)
        if relu_input:
            x = self.relu(x)
        x = self.blocks(self.transition(x))
        return self.relu(self.norm(x))


@register_model
class SANACmix(ACmixBackbone):
    """SAN-ACmix backbone (paper Table 10), for mmdet and mmseg.

    A 1x1 stem convolution, then five stages, each halving the map: stage 0 (64
    channels, stride 2, patch side 3) belongs to the stem, as ResNet's max pool does;
    ``out_indices`` name the four stages after it (256, 512, 1024 and 2048 channels,
    strides 4 to 32), as ResNet's. Input sides should be multiples of 32 (mmdet pads to
    them): the 2x2 pools drop odd rows and columns, as SAN's.

    Args:
        depth (int): 10, 15 or 19.
        kernel_sizes (Sequence[int]): Attention patch side of each of the five stages.
            Default: (3, 7, 7, 7, 7).
        kernel_conv (int): Kernel k_c of every convolution path. Default: 3.
        share_planes (int): Value channels sharing one attention weight. Default: 8.
        rate_init (tuple[float]): Initial (alpha, beta) of every ACmix. Default:
            (0.5, 0.5); (1.0, 0.0) computes exactly SAN at the start, e.g. when
            starting from SAN's ImageNet weights.
        out_indices (Sequence[int]): Stages (0-3: strides 4-32) to output.
            Default: (0, 1, 2, 3).
        frozen_stages (int): -1 freezes nothing, 0 the stem (``conv_in``, ``norm_in``
            and ``stages[0]``), i > 0 the stem and the first i stages (mmdet's
            ResNet convention); frozen parts stay in eval mode. Default: -1.
        norm_cfg (dict): Config of every norm. Default: dict(type='BN',
            requires_grad=True).
        norm_eval (bool): Keep the norms in eval mode (frozen statistics) while
            training. Default: False.
        with_cp (bool): Checkpoint each block to save memory. Default: False.
        convert_weights (bool): Accept the official SAN layout in ``init_cfg`` and
            convert it on load. Default: True.
        init_cfg (dict | list[dict], optional): None keeps PyTorch's default
            initialisation, as the official SAN (Kaiming fan_out, as ResNet, would
            amplify the 1x1 projections that narrow C to C/4 and make the unnormalised
            patchwise products grow from block to block);
            ``dict(type='Pretrained', checkpoint=...)`` loads an official SAN or our
            checkpoint. Default: None.
    """
    arch_settings = {
        10: (2, 1, 2, 4, 1),
        15: (3, 2, 3, 5, 2),
        19: (3, 3, 4, 6, 3),
    }
    stage_channels = (64, 256, 512, 1024, 2048)
    with_conv_path = True
    official_layout = 'official SAN (patchwise)'
    # The patchwise attention runs in bands of rows counted from the map's size: an
    # exported graph holds for the size it was exported at only (acmix_mm.deploy).
    min_free_side = None

    def __init__(self,
                 depth,
                 kernel_sizes=(3, 7, 7, 7, 7),
                 kernel_conv=3,
                 share_planes=8,
                 rate_init=(0.5, 0.5),
                 out_indices=(0, 1, 2, 3),
                 frozen_stages=-1,
                 norm_cfg=dict(type='BN', requires_grad=True),
                 norm_eval=False,
                 with_cp=False,
                 convert_weights=True,
                 pretrained=None,
                 init_cfg=None):
        name = type(self).__name__
        if depth not in self.arch_settings:
            raise ConfigError(f'Unknown {name} depth {depth!r}; choose one of '
                             f'{sorted(self.arch_settings)}.')
        if pretrained is not None:
            raise ConfigError(f"{name} takes init_cfg=dict(type='Pretrained', "
                             "checkpoint=...) instead of pretrained=.")
        if len(kernel_sizes) != 5:
            raise ConfigError(f'kernel_sizes needs one patch side per stage (5), got '
                             f'{tuple(kernel_sizes)}.')
        super().__init__(init_cfg=init_cfg)
        self.depth = depth
        self.out_indices = self.check_out_indices(out_indices, 4)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.convert_weights = convert_weights

        self.conv_in = nn.Conv2d(3, self.stage_channels[0], kernel_size=1, bias=False)
        self.norm_in = build_norm(norm_cfg, self.stage_channels[0])
        in_channels = self.stage_channels[0]
        self.stages = nn.ModuleList()
        for i, (channels, num_blocks) in enumerate(
                zip(self.stage_channels, self.arch_settings[depth])):
            self.stages.append(SANStage(
                in_channels,
                channels,
                num_blocks,
                norm_cfg=norm_cfg,
                kernel_att=kernel_sizes[i],
                kernel_conv=kernel_conv,
                share_planes=share_planes,
                with_conv_path=self.with_conv_path,
                rate_init=rate_init,
                with_cp=with_cp))
            in_channels = channels
        self._freeze_stages()

    def stem_parts(self):
        return [self.conv_in, self.norm_in, self.stages[0]]

    def stage_parts(self, index):
        return [self.stages[index + 1]]

    def forward(self, x):
        # The stem's ReLU after stage 0's pool: the full-resolution map is the largest.
        x = self.stages[0](self.norm_in(self.conv_in(x)), relu_input=True)
        outs = []
        for i in range(max(self.out_indices) + 1):  # no stage past the last output
            x = self.stages[i + 1](x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def convert_pretrained(self, state_dict):
        return super().convert_pretrained(rename_numbered_stages(state_dict))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Whole-model checkpoints (a detector's, a resumed run's) reach the backbone here;
        # the children read the same dict after this.
        if any(key.startswith(prefix + 'stage0.') for key in state_dict):
            renamed = rename_numbered_stages(state_dict, prefix)
            state_dict.clear()
            state_dict.update(renamed)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def rename_numbered_stages(state_dict, prefix=''):
    """Our SAN checkpoints written before the stages became ``stages`` (a ModuleList)
    name them ``stage0`` .. ``stage4``: the keys of today's layout (order kept)."""
    old = re.compile(re.escape(prefix) + r'stage(\d)\.')
    return OrderedDict((old.sub(prefix + r'stages.\1.', key, count=1)
                        if old.match(key) else key, value)
                       for key, value in state_dict.items())


@register_model
class SAN(SANACmix):
    """SAN with patchwise attention (Zhao et al., CVPR 2020): the baseline of SAN-ACmix.

    The same network as :class:`SANACmix` without the convolution path; takes the same
    arguments (``kernel_conv`` and ``rate_init`` have no effect) and loads the official
    SAN checkpoints.
    """
    with_conv_path = False


def is_official_san(state_dict):
    """Whether a state dict is in the layout of the official SAN code."""
    return any(re.match(r'layer\d\.\d+\.sam\.', k) for k in state_dict)


def san_official_to_acmix(state_dict):
    """Convert an official SAN (patchwise) state dict (hszhao/SAN) to ours.

    The three 1x1 projections (conv1, conv2, conv3 of each attention module) become the
    shared projection ``qkv``; ``conv_w`` becomes the attention path's norms and linear
    layers; stem, transitions and stage norms are renamed. The ImageNet classifier
    ``fc`` is left out. A SAN-ACmix written in the official ACmix code's style (``fc``,
    ``dep_conv``, ``rate1``, ``rate2`` beside the projections, as its ResNet-ACmix)
    converts too. Pairwise SAN (``conv_p`` keys) has no counterpart.

    Returns:
        tuple: the converted state dict and a list of ``'key: reason'`` for the left
        out tensors. Keys that match no rule are kept unchanged, so that loading
        reports them.
    """
    if any('.sam.conv_p.' in k for k in state_dict):
        raise ConfigError('This is a pairwise SAN checkpoint; SAN-ACmix builds on '
                         'patchwise SAN (sa_type 1).')
    block, ours = r'^layer(\d)\.(\d+)\.', r'stages.\1.blocks.\2.'
    renames = (
        (r'^conv_in\.', 'conv_in.'),
        (r'^bn_in\.', 'norm_in.'),
        (r'^conv(\d)\.', r'stages.\1.transition.'),
        (r'^bn(\d)\.', r'stages.\1.norm.'),
        (block + r'bn1\.', ours + 'norm1.'),
        (block + r'bn2\.', ours + 'norm2.'),
        (block + r'conv\.', ours + 'conv.'),
        (block + r'sam\.conv_w\.0\.', ours + 'attn.attn_path.norm_in.'),
        (block + r'sam\.conv_w\.2\.', ours + 'attn.attn_path.fc1.'),
        (block + r'sam\.conv_w\.3\.', ours + 'attn.attn_path.norm_mid.'),
        (block + r'sam\.conv_w\.5\.', ours + 'attn.attn_path.fc2.'),
        # A SAN-ACmix in the official ACmix code's naming (as its ResNet-ACmix).
        (block + r'sam\.(fc|dep_conv)\.', ours + r'attn.conv_path.\3.'),
        (block + r'sam\.rate1$', ours + 'attn.alpha'),
        (block + r'sam\.rate2$', ours + 'attn.beta'),
    )
    converted, discarded = OrderedDict(), []
    for key, value in state_dict.items():
        if key.startswith('fc.'):
            discarded.append(f'{key}: ImageNet classifier, not part of a backbone')
            continue
        projection = re.match(r'^layer(\d)\.(\d+)\.sam\.conv([123])\.(weight|bias)$', key)
        if projection:
            stage, block, index, kind = projection.groups()
            if index != '1':
                continue  # joined with conv1 below
            converted[f'stages.{stage}.blocks.{block}.attn.qkv.{kind}'] = join_projections(
                state_dict, [f'layer{stage}.{block}.sam.conv{i}.{kind}' for i in '123'])
            continue
        new_key = rename_key(key, renames)
        if re.search(r'attn_path\.fc[12]\.weight$', new_key):
            value = value.flatten(1)  # 1x1 convolutions -> linear layers
        converted[new_key] = value
    return converted, discarded


register_official_layout('official SAN (patchwise)', 'SAN / SANACmix', is_official_san,
                         san_official_to_acmix)
