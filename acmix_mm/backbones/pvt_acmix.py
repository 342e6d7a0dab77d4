"""PVT-ACmix: Pyramid Vision Transformer v1 with ACmix attention (paper Table 11).

Layering, small to large: :class:`PVTACmixBlock` (norm, ACmix with PVT's
spatial-reduction attention as its attention path, norm, FFN) ->
:class:`PVTACmixStage` (patch embedding, absolute position embedding, blocks) ->
:class:`PVTACmix` (the backbone). :func:`pvt_official_to_acmix` converts the official PVT
v1 ImageNet checkpoints (whai362/PVT) to this layout.
"""
import re
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import PatchEmbed
from mmdet.models.layers import nchw_to_nlc, nlc_to_nchw
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import normal_init, trunc_normal_init

from ..checkpoint import join_projections, rename_key
from ..registry import register_model
from .base import ACmixTransformerBackbone, ACmixTransformerBlock, register_official_layout


class PVTACmixBlock(ACmixTransformerBlock):
    """One PVT encoder layer whose attention is ACmix.

    The convolution path takes q, k, v projected from the full-resolution tokens; the
    attention path takes q and applies the same k, v weights to the tokens reduced by
    ``sr_ratio``, so one set of projection weights serves both paths.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Attention heads.
        feedforward_channels (int): Hidden channels of the FFN.
        sr_ratio (int): Spatial reduction ratio of the attention path. Default: 1.
        drop_rate (float): Dropout after attention and in the FFN. Default: 0.
        attn_drop_rate (float): Dropout on attention weights. Default: 0.
        norm_cfg (dict): The block's two norms. Default: dict(type='LN', eps=1e-6).
        sr_norm_cfg (dict): Norm after the spatial reduction; the official PVT v1 uses
            ``nn.LayerNorm(dim)`` there (eps 1e-5), unlike its block norms.
            Default: dict(type='LN').
        **kwargs: The other arguments of :class:`ACmixTransformerBlock`
            (``qkv_bias``, ``drop_path_rate``, ``kernel_conv``, ``rate_init``,
            ``act_cfg``, ``with_cp``, ``init_cfg``).
    """

    def __init__(self,
                 embed_dims,
                 num_heads,
                 feedforward_channels,
                 sr_ratio=1,
                 drop_rate=0.,
                 attn_drop_rate=0.,
                 norm_cfg=dict(type='LN', eps=1e-6),
                 sr_norm_cfg=dict(type='LN'),
                 **kwargs):
        super().__init__(
            embed_dims,
            num_heads,
            feedforward_channels,
            attn_path=dict(
                type='SpatialReductionAttentionPath',
                sr_ratio=sr_ratio,
                attn_drop=attn_drop_rate,
                proj_drop=drop_rate,
                norm_cfg=sr_norm_cfg),
            drop_rate=drop_rate,
            norm_cfg=norm_cfg,
            **kwargs)


def resize_pos_embed(pos_embed, src_shape, dst_shape):
    """Position embeddings (1, H*W, C) of an ``src_shape`` grid resized bilinearly (as
    the official detection PVT) to ``dst_shape``."""
    grid = pos_embed.reshape(1, *src_shape, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(dst_shape), mode='bilinear', align_corners=False)
    return nchw_to_nlc(grid)


class PVTACmixStage(BaseModule):
    """Patch embedding, absolute position embedding and the blocks of one stage.

    Args:
        in_channels (int): Channels of the stage input.
        embed_dims (int): Channels of the stage.
        patch_size (int): Patch size (and stride) of the embedding.
        pos_shape (int): Grid side of the position embedding at the pretraining size;
            it is resized bilinearly to any other grid.
        num_blocks (int): Number of blocks.
        block_cfg (dict): Keyword arguments of each :class:`PVTACmixBlock`, except
            ``drop_path_rate``.
        drop_path_rates (Sequence[float]): One stochastic depth rate per block.
        drop_rate (float): Dropout after adding the position embedding. Default: 0.
        patch_norm_cfg (dict): Norm of the patch embedding. Default: dict(type='LN').
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 in_channels,
                 embed_dims,
                 patch_size,
                 pos_shape,
                 num_blocks,
                 block_cfg,
                 drop_path_rates,
                 drop_rate=0.,
                 patch_norm_cfg=dict(type='LN'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        # 'corner' padding keeps the right and bottom pixels of inputs that are not a
        # multiple of the patch size (output size is the ceiling, as for a conv).
        self.patch_embed = PatchEmbed(
            in_channels=in_channels,
            embed_dims=embed_dims,
            kernel_size=patch_size,
            stride=patch_size,
            padding='corner',
            norm_cfg=patch_norm_cfg)
        self.pos_shape = (pos_shape, pos_shape)
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_shape * pos_shape, embed_dims))
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = ModuleList([
            PVTACmixBlock(embed_dims=embed_dims, drop_path_rate=rate, **block_cfg)
            for rate in drop_path_rates[:num_blocks]
        ])

    def resized_pos_embed(self, hw_shape):
        """The position embedding resized bilinearly to ``hw_shape``."""
        if tuple(hw_shape) == self.pos_shape:
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, self.pos_shape, hw_shape)

    def forward(self, x):
        """(B, C_in, H, W) -> tokens (B, H'*W', C) and (H', W')."""
        x, hw_shape = self.patch_embed(x)
        x = self.pos_drop(x + self.resized_pos_embed(hw_shape))
        for block in self.blocks:
            x = block(x, hw_shape)
        return x, hw_shape


@register_model
class PVTACmix(ACmixTransformerBackbone):
    """PVT-ACmix backbone (paper Table 11), for mmdet and mmseg.

    Every spatial-reduction attention of PVT v1 is replaced by ACmix whose attention
    path is that same spatial-reduction attention.

    Args:
        arch (str | dict): 'tiny', 'small', 'medium' or 'large' (PVT v1 sizes), or a
            dict with keys ``embed_dims``, ``num_heads``, ``depths``, ``mlp_ratios``,
            ``sr_ratios``. Default: 'tiny'.
        in_channels (int): Input image channels. Default: 3.
        pretrain_img_size (int): Image size the position embeddings were trained at.
            Default: 224.
        patch_sizes (Sequence[int]): Patch size of each stage. Default: (4, 2, 2, 2).
        out_indices (Sequence[int]): Stages whose outputs are returned.
            Default: (0, 1, 2, 3).
        qkv_bias (bool): Bias of the q, k, v projections. Default: True.
        drop_rate (float): Dropout rate. Default: 0.
        attn_drop_rate (float): Attention dropout rate. Default: 0.
        drop_path_rate (float): Stochastic depth rate, increasing linearly over the
            blocks up to this value. Default: 0.1.
        kernel_conv (int): Kernel size of the ACmix convolution path. Default: 3.
        rate_init (tuple[float]): Initial (alpha, beta) of every ACmix. Default:
            (0.5, 0.5) as in the official code; (1.0, 0.0) makes a model loaded from
            a PVT checkpoint compute exactly that PVT at step 0.
        act_cfg (dict): FFN activation. Default: dict(type='GELU').
        norm_cfg (dict): Norms inside the blocks. Default: dict(type='LN', eps=1e-6).
        frozen_stages (int): -1 freezes nothing, 0 the stem (stage 0's patch and
            position embeddings), i > 0 the stem and the first i stages; frozen parts
            stay in eval mode. Default: -1.
        norm_eval (bool): Keep BatchNorm layers in eval mode during training (PVT uses
            LayerNorm, so this only matters for a BN ``norm_cfg``). Default: False.
        final_norm (bool): A norm (``norm_cfg``) on the last stage's output, as the
            official PVT v1 classifier's final norm; for ImageNet classification
            (configs/pretrain). Detection PVT v1 has none, and a downstream backbone
            without it leaves it out of a classification checkpoint. Default: False.
        with_cp (bool): Gradient checkpointing of each block. Default: False.
        convert_weights (bool): Accept the official PVT v1 checkpoint layout in
            ``init_cfg`` and convert it on load. Default: True.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=...)`` with an
            official PVT v1 ImageNet checkpoint or one of ours. Default: None.
    """
    _pvt_v1 = dict(
        embed_dims=[64, 128, 320, 512],
        num_heads=[1, 2, 5, 8],
        mlp_ratios=[8, 8, 4, 4],
        sr_ratios=[8, 4, 2, 1])
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], dict(_pvt_v1, depths=[2, 2, 2, 2])),
        **dict.fromkeys(['s', 'small'], dict(_pvt_v1, depths=[3, 4, 6, 3])),
        **dict.fromkeys(['m', 'medium'], dict(_pvt_v1, depths=[3, 4, 18, 3])),
        **dict.fromkeys(['l', 'large'], dict(_pvt_v1, depths=[3, 8, 27, 3])),
    }
    arch_keys = ('embed_dims', 'num_heads', 'depths', 'mlp_ratios', 'sr_ratios')
    official_layout = 'official PVT v1'
    classification_only_keys = (r'^norm\.', )

    def __init__(self,
                 arch='tiny',
                 in_channels=3,
                 pretrain_img_size=224,
                 patch_sizes=(4, 2, 2, 2),
                 out_indices=(0, 1, 2, 3),
                 qkv_bias=True,
                 drop_rate=0.,
                 attn_drop_rate=0.,
                 drop_path_rate=0.1,
                 kernel_conv=3,
                 rate_init=(0.5, 0.5),
                 act_cfg=dict(type='GELU'),
                 norm_cfg=dict(type='LN', eps=1e-6),
                 frozen_stages=-1,
                 norm_eval=False,
                 final_norm=False,
                 with_cp=False,
                 convert_weights=True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        arch = self.resolve_arch(arch)
        self.out_indices = self.check_out_indices(out_indices, len(arch['depths']))
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.convert_weights = convert_weights

        rates = torch.linspace(0, drop_path_rate, sum(arch['depths'])).tolist()
        self.stages = ModuleList()
        channels, grid, start = in_channels, pretrain_img_size, 0
        for i, depth in enumerate(arch['depths']):
            grid //= patch_sizes[i]
            dims = arch['embed_dims'][i]
            self.stages.append(
                PVTACmixStage(
                    in_channels=channels,
                    embed_dims=dims,
                    patch_size=patch_sizes[i],
                    pos_shape=grid,
                    num_blocks=depth,
                    block_cfg=dict(
                        num_heads=arch['num_heads'][i],
                        feedforward_channels=arch['mlp_ratios'][i] * dims,
                        sr_ratio=arch['sr_ratios'][i],
                        qkv_bias=qkv_bias,
                        drop_rate=drop_rate,
                        attn_drop_rate=attn_drop_rate,
                        kernel_conv=kernel_conv,
                        rate_init=rate_init,
                        act_cfg=act_cfg,
                        norm_cfg=norm_cfg,
                        with_cp=with_cp),
                    drop_path_rates=rates[start:start + depth],
                    drop_rate=drop_rate))
            channels, start = dims, start + depth
        self.num_features = [arch['embed_dims'][i] for i in self.out_indices]
        if final_norm:
            self.norm = build_norm_layer(norm_cfg, channels)[1]
        self._freeze_stages()

    def stem_parts(self):
        first = self.stages[0]
        return [first.patch_embed, first.pos_embed, first.pos_drop]

    def init_other_module(self, module):
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            normal_init(module, 0, (2.0 / (fan_out // module.groups))**0.5)

    def init_extra_weights(self):
        for stage in self.stages:
            trunc_normal_init(stage.pos_embed, std=.02)

    def convert_pretrained(self, state_dict):
        state_dict, discarded = super().convert_pretrained(state_dict)
        # Position embeddings of another pretraining size are resized to ours.
        for i, stage in enumerate(self.stages):
            key = f'stages.{i}.pos_embed'
            if key in state_dict and state_dict[key].shape != stage.pos_embed.shape:
                side = int(state_dict[key].shape[1]**0.5)
                state_dict[key] = resize_pos_embed(state_dict[key], (side, side),
                                                   stage.pos_shape)
        return state_dict, discarded

    def forward(self, x):
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw_shape = stage(x)
            if i == len(self.stages) - 1 and hasattr(self, 'norm'):
                x = self.norm(x)
            x = nlc_to_nchw(x, hw_shape)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


def is_official_pvt(state_dict):
    """Whether a state dict is in the layout of the official PVT v1 code."""
    return any(re.match(r'(block|patch_embed|pos_embed)\d', k) for k in state_dict)


def pvt_official_to_acmix(state_dict):
    """Convert an official PVT v1 state dict (whai362/PVT) to the PVTACmix layout.

    q and kv projections are joined into the shared projection.

    Returns:
        tuple: the converted state dict, and a list of ``'key: reason'`` for the
        classification head, final norm and class token, which a backbone does not
        use. Keys that match no rule are kept unchanged, so that loading reports them.
    """
    block = r'^block(\d)\.(\d+)\.'
    renames = (
        (r'^pos_embed(\d)$', _stage('stages.{}.pos_embed')),
        (r'^patch_embed(\d)\.proj\.', _stage('stages.{}.patch_embed.projection.')),
        (r'^patch_embed(\d)\.norm\.', _stage('stages.{}.patch_embed.norm.')),
        (block + r'attn\.(proj|sr|norm)\.', _stage('stages.{}.blocks.{}.attn.attn_path.{}.')),
        (block + r'mlp\.fc1\.', _stage('stages.{}.blocks.{}.ffn.layers.0.0.')),
        (block + r'mlp\.fc2\.', _stage('stages.{}.blocks.{}.ffn.layers.1.')),
        (block + r'attn\.q\.', _stage('stages.{}.blocks.{}.attn.qkv.')),
        (block, _stage('stages.{}.blocks.{}.')),  # norm1, norm2
    )
    converted, discarded = OrderedDict(), []
    for key, value in state_dict.items():
        if key.startswith(('head.', 'norm.')) or key == 'cls_token':
            discarded.append(f'{key}: ImageNet classification part, not used by a '
                             'backbone')
            continue
        if re.match(block + r'attn\.kv\.', key):
            continue  # joined with attn.q
        new_key = rename_key(key, renames)
        if re.match(block + r'attn\.q\.', key):
            value = join_projections(state_dict, (key, key.replace('.attn.q.', '.attn.kv.')))
        elif re.match(r'pos_embed\d$', key):
            side = int(value.shape[1]**0.5)
            if side * side != value.shape[1]:  # stage 4 carries the class token first
                value = value[:, 1:]
        converted[new_key] = value
    return converted, discarded


def _stage(template):
    """A replacement (for :func:`rename_key`) that fills ``template`` with the match's
    groups, the first (the official 1-based stage number) made our 0-based index."""
    return lambda match: template.format(int(match[1]) - 1, *match.groups()[1:])


register_official_layout('official PVT v1', 'PVTACmix', is_official_pvt, pvt_official_to_acmix)
