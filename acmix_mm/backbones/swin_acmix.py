"""Swin-ACmix: Swin Transformer with ACmix at the shifted-window level (paper Table 12).

Layering, small to large: :class:`SwinACmixBlock` (norm, pad to window multiples,
cyclic shift, ACmix whose attention path is Swin's window attention and whose
convolution path runs on the same shifted map, shift back, norm, FFN) ->
:class:`SwinACmixStage` (blocks, then :class:`PatchMerging`) -> :class:`SwinACmix`.
:func:`swin_official_to_acmix` converts the official Swin-ACmix release
(LeapLabTHU/ACmix) and official Swin (microsoft/Swin-Transformer) checkpoints.
"""
import re
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import PatchEmbed
from mmdet.models.layers import nlc_to_nchw
from mmengine.model import BaseModule, ModuleList

from ..checkpoint import rename_key
from ..layers import ShiftedWindowAttentionPath
from ..layers.linear import NativeLinear
from ..registry import register_model
from .base import ACmixTransformerBackbone, ACmixTransformerBlock, register_official_layout


class SwinACmixBlock(ACmixTransformerBlock):
    """One Swin block whose (shifted) window attention is ACmix.

    As the official Swin-ACmix, the shared projection runs once on the cyclically
    shifted map; the convolution path works on that map and is added after the window
    attention's output projection. A map no larger than a window in its short side is
    not shifted (the official model drops the shift there too).

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Attention heads.
        feedforward_channels (int): Hidden channels of the FFN.
        window_size (int): Window side. Default: 7.
        shift (bool): Shift the windows by half a window. Default: False.
        drop_rate (float): Dropout after attention and in the FFN. Default: 0.
        attn_drop_rate (float): Dropout on attention weights. Default: 0.
        **kwargs: The other arguments of :class:`ACmixTransformerBlock`
            (``qkv_bias``, ``drop_path_rate``, ``kernel_conv``, ``rate_init``,
            ``act_cfg``, ``norm_cfg``, ``with_cp``, ``init_cfg``).
    """

    def __init__(self,
                 embed_dims,
                 num_heads,
                 feedforward_channels,
                 window_size=7,
                 shift=False,
                 drop_rate=0.,
                 attn_drop_rate=0.,
                 **kwargs):
        super().__init__(
            embed_dims,
            num_heads,
            feedforward_channels,
            attn_path=dict(
                type='ShiftedWindowAttentionPath',
                window_size=window_size,
                attn_drop=attn_drop_rate,
                proj_drop=drop_rate),
            fc_bias=True,
            drop_rate=drop_rate,
            **kwargs)
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift else 0

    def mix(self, x, hw_shape):
        """Norm, pad, shift, ACmix, shift back, crop: tokens in, tokens out."""
        batch, _, channels = x.shape
        height, width = hw_shape
        window = self.window_size
        x = self.norm1(x).view(batch, height, width, channels)
        pad_h, pad_w = (-height) % window, (-width) % window
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        padded = (height + pad_h, width + pad_w)
        shift = self.shift_size if min(height, width) > window else 0
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        x = self.attn(x.reshape(batch, -1, channels), padded, shift_size=shift)
        x = x.view(batch, *padded, channels)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x[:, :height, :width].reshape(batch, height * width, channels)


class PatchMerging(BaseModule):
    """2x2 patch merging of Swin, in the official channel order.

    Concatenates the pixels at (0, 0), (1, 0), (0, 1), (1, 1) of every 2x2 patch (the
    official order, so official weights load unchanged), normalises and projects to
    ``out_channels``. Odd maps are zero-padded at the bottom and right.

    Args:
        in_channels (int): Input channels C.
        out_channels (int): Output channels, usually 2C.
        norm_cfg (dict): Norm before the projection. Default: dict(type='LN').
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self, in_channels, out_channels, norm_cfg=dict(type='LN'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.norm = build_norm_layer(norm_cfg, 4 * in_channels)[1]
        self.reduction = NativeLinear(4 * in_channels, out_channels, bias=False)

    def forward(self, x, hw_shape):
        batch, _, channels = x.shape
        height, width = hw_shape
        x = x.view(batch, height, width, channels)
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                       x[:, 1::2, 1::2]], dim=-1)
        out_shape = x.shape[1:3]
        x = self.reduction(self.norm(x.reshape(batch, -1, 4 * channels)))
        return x, tuple(out_shape)


class SwinACmixStage(BaseModule):
    """The blocks of one stage (alternately plain and shifted), then patch merging.

    Args:
        embed_dims (int): Channels of the stage.
        num_blocks (int): Number of blocks.
        block_cfg (dict): Keyword arguments of each :class:`SwinACmixBlock`, except
            ``shift`` and ``drop_path_rate``.
        drop_path_rates (Sequence[float]): One stochastic depth rate per block.
        downsample (bool): End with :class:`PatchMerging` to 2x channels. Default: True.
        norm_cfg (dict): Norm of the patch merging. Default: dict(type='LN').
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 embed_dims,
                 num_blocks,
                 block_cfg,
                 drop_path_rates,
                 downsample=True,
                 norm_cfg=dict(type='LN'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.blocks = ModuleList([
            SwinACmixBlock(
                embed_dims=embed_dims,
                shift=i % 2 == 1,
                drop_path_rate=drop_path_rates[i],
                norm_cfg=norm_cfg,
                **block_cfg) for i in range(num_blocks)
        ])
        self.downsample = PatchMerging(embed_dims, 2 * embed_dims,
                                       norm_cfg) if downsample else None

    def forward(self, x, hw_shape):
        """Returns the merged tokens and grid, and the stage output before merging."""
        for block in self.blocks:
            x = block(x, hw_shape)
        if self.downsample is None:
            return x, hw_shape, x, hw_shape
        merged, merged_shape = self.downsample(x, hw_shape)
        return merged, merged_shape, x, hw_shape


@register_model
class SwinACmix(ACmixTransformerBackbone):
    """Swin-ACmix backbone (paper Table 12), for mmdet and mmseg.

    Args:
        arch (str | dict): 'tiny', 'small' or 'base', or a dict with keys
            ``embed_dims``, ``depths``, ``num_heads``. Default: 'tiny'.
        in_channels (int): Input image channels. Default: 3.
        patch_size (int): Patch size of the embedding. Default: 4.
        window_size (int): Window side. Default: 7.
        mlp_ratio (float): FFN hidden channels over embedding channels. Default: 4.
        out_indices (Sequence[int]): Stages whose outputs (each with its own norm, as
            mmdet's Swin) are returned. Default: (0, 1, 2, 3).
        qkv_bias (bool): Bias of the shared projections. Default: True.
        drop_rate (float): Dropout rate. Default: 0.
        attn_drop_rate (float): Attention dropout rate. Default: 0.
        drop_path_rate (float): Stochastic depth rate, increasing linearly over the
            blocks up to this value. Default: 0.1.
        kernel_conv (int): Kernel of the ACmix convolution path. Default: 3.
        rate_init (tuple[float]): Initial (alpha, beta) of every ACmix. Default:
            (0.5, 0.5) as the official code; (1.0, 0.0) makes a model loaded from a
            plain Swin checkpoint compute exactly that Swin at step 0.
        act_cfg (dict): FFN activation. Default: dict(type='GELU').
        norm_cfg (dict): Norm layers. Default: dict(type='LN').
        frozen_stages (int): As mmdet's Swin: -1 freezes nothing, 0 the stem (patch
            embedding), i > 0 the stem and the first i stages (with their output
            norms); frozen parts stay in eval mode. Default: -1.
        norm_eval (bool): Keep BatchNorm layers in eval mode during training (Swin uses
            LayerNorm, so this only matters for a BN ``norm_cfg``). Default: False.
        with_cp (bool): Gradient checkpointing of each block. Default: False.
        convert_weights (bool): Accept the official Swin-ACmix and Swin checkpoint
            layouts in ``init_cfg`` and convert them on load. Default: True.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=...)``.
            Default: None.

    Attributes:
        min_free_side (int): The smallest input side from which on every shifted block
            shifts (a block whose map fits in one window does not, as in the official
            Swin): a graph exported with free input sizes holds from this side up.
    """
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'],
                        dict(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24])),
        **dict.fromkeys(['s', 'small'],
                        dict(embed_dims=96, depths=[2, 2, 18, 2],
                             num_heads=[3, 6, 12, 24])),
        **dict.fromkeys(['b', 'base'],
                        dict(embed_dims=128, depths=[2, 2, 18, 2],
                             num_heads=[4, 8, 16, 32])),
    }
    arch_keys = ('embed_dims', 'depths', 'num_heads')
    official_layout = 'official Swin / Swin-ACmix'

    def __init__(self,
                 arch='tiny',
                 in_channels=3,
                 patch_size=4,
                 window_size=7,
                 mlp_ratio=4,
                 out_indices=(0, 1, 2, 3),
                 qkv_bias=True,
                 drop_rate=0.,
                 attn_drop_rate=0.,
                 drop_path_rate=0.1,
                 kernel_conv=3,
                 rate_init=(0.5, 0.5),
                 act_cfg=dict(type='GELU'),
                 norm_cfg=dict(type='LN'),
                 frozen_stages=-1,
                 norm_eval=False,
                 with_cp=False,
                 convert_weights=True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        arch = self.resolve_arch(arch)
        depths = arch['depths']
        num_stages = len(depths)
        self.out_indices = self.check_out_indices(out_indices, num_stages)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.convert_weights = convert_weights
        self.patch_embed = PatchEmbed(
            in_channels=in_channels,
            embed_dims=arch['embed_dims'],
            kernel_size=patch_size,
            stride=patch_size,
            padding='corner',
            norm_cfg=norm_cfg)
        self.drop_after_pos = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = ModuleList()
        dims = arch['embed_dims']
        self.num_features = []
        for i, depth in enumerate(depths):
            self.stages.append(
                SwinACmixStage(
                    embed_dims=dims,
                    num_blocks=depth,
                    block_cfg=dict(
                        num_heads=arch['num_heads'][i],
                        feedforward_channels=int(mlp_ratio * dims),
                        window_size=window_size,
                        qkv_bias=qkv_bias,
                        drop_rate=drop_rate,
                        attn_drop_rate=attn_drop_rate,
                        kernel_conv=kernel_conv,
                        rate_init=rate_init,
                        act_cfg=act_cfg,
                        with_cp=with_cp),
                    drop_path_rates=rates[sum(depths[:i]):sum(depths[:i + 1])],
                    downsample=i < num_stages - 1,
                    norm_cfg=norm_cfg))
            self.num_features.append(dims)
            dims *= 2 if i < num_stages - 1 else 1
        for i in self.out_indices:
            self.add_module(f'norm{i}', build_norm_layer(norm_cfg,
                                                         self.num_features[i])[1])
        self.min_free_side = patch_size * 2**(num_stages - 1) * window_size + 1
        self._freeze_stages()

    def init_extra_weights(self):
        for m in self.modules():
            if isinstance(m, ShiftedWindowAttentionPath):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=.02)

    def pretrained_new_keys(self):
        # The output norms of stages 0-2 are mmdet's addition to the classifier.
        return self.acmix_only_keys + (r'^norm\d\.', )

    def official_convert_options(self):
        last = len(self.stages) - 1
        return dict(final_norm=f'norm{last}' if last in self.out_indices else None)

    def stem_parts(self):
        return [self.patch_embed, self.drop_after_pos]

    def stage_parts(self, index):
        norm = [getattr(self, f'norm{index}')] if index in self.out_indices else []
        return [self.stages[index]] + norm

    def forward(self, x):
        x, hw_shape = self.patch_embed(x)
        x = self.drop_after_pos(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x, next_shape, out, out_shape = stage(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                outs.append(nlc_to_nchw(out, out_shape))
            hw_shape = next_shape
        return tuple(outs)


def is_official_swin(state_dict):
    """Whether a state dict is in the layout of the official (ACmix) Swin code."""
    return any(k.startswith('layers.') for k in state_dict) and \
        'patch_embed.proj.weight' in state_dict


# Within a block (rename_key: the first rule that matches).
_SWIN_BLOCK_RULES = (
    (r'^attn\.proj\.', 'attn.attn_path.proj.'),
    (r'^attn\.relative_position_bias_table$', 'attn.attn_path.relative_position_bias_table'),
    (r'^attn\.fc\.', 'attn.conv_path.fc.'),
    (r'^attn\.dep_conv\.', 'attn.conv_path.dep_conv.'),
    (r'^attn\.rate1$', 'attn.alpha'),
    (r'^attn\.rate2$', 'attn.beta'),
    (r'^mlp\.fc1\.', 'ffn.layers.0.0.'),
    (r'^mlp\.fc2\.', 'ffn.layers.1.'),
)


def swin_official_to_acmix(state_dict, final_norm='norm3'):
    """Convert an official Swin-ACmix or Swin state dict to the SwinACmix layout.

    Args:
        state_dict (dict): Weights of ``SwinTransformer_acmix`` (LeapLabTHU/ACmix) or
            ``SwinTransformer`` (microsoft/Swin-Transformer).
        final_norm (str, optional): Our name for the official final norm (the norm of
            the last stage's output); None drops it.

    Returns:
        tuple: the converted state dict, and a list of ``'key: reason'`` for each
        official tensor deliberately left out (classifier, recomputed buffers). Keys
        that match no rule are kept unchanged, so that loading reports them.
    """
    converted, discarded = OrderedDict(), []
    for key, value in state_dict.items():
        new_key = key
        if key.startswith('head.'):
            discarded.append(f'{key}: ImageNet classifier, not part of a backbone')
            continue
        if key.endswith(('relative_position_index', 'attn_mask')):
            discarded.append(f'{key}: buffer recomputed by the model')
            continue
        if key.startswith('norm.'):
            if final_norm is None:
                discarded.append(f'{key}: final norm; the last stage is not an output')
                continue
            new_key = final_norm + key[len('norm'):]
        elif key.startswith('patch_embed.proj.'):
            new_key = 'patch_embed.projection.' + key[len('patch_embed.proj.'):]
        match = re.match(r'layers\.(\d+)\.(.*)', key)
        if match:
            stage, rest = match.groups()
            block = re.match(r'blocks\.(\d+)\.(.*)', rest)
            if block:
                tail = rename_key(block.group(2), _SWIN_BLOCK_RULES)
                rest = f'blocks.{block.group(1)}.{tail}'
            new_key = f'stages.{stage}.{rest}'
        converted[new_key] = value
    return converted, discarded


register_official_layout('official Swin / Swin-ACmix', 'SwinACmix', is_official_swin,
                         swin_official_to_acmix)
