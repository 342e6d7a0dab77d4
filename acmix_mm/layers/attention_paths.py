"""Attention modes for the ACmix operator.

Each path takes ``(x, qkv, hw_shape, projection)``: the block input tokens, the shared
Stage I projection of them, the token grid and the projection layer itself (so that a
mode that attends to other tokens than the queries can project those with the very same
weights), and returns F_att in the token layout (B, H*W, C).
"""
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule

from ..registry import ATTENTION_PATHS


@ATTENTION_PATHS.register_module()
class SpatialReductionAttentionPath(BaseModule):
    """Global attention with spatial reduction (PVT v1), as an ACmix attention path.

    Queries are the shared projection of the full-resolution tokens. Keys and values
    come from the tokens reduced by a ``sr_ratio`` x ``sr_ratio`` strided convolution
    and a norm, projected with the same k and v weights of the shared projection that
    gave the convolution path its full-resolution k and v. With ``sr_ratio`` 1 the
    keys and values are the shared projection itself.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Number of heads.
        sr_ratio (int): Spatial reduction ratio R. Default: 1.
        attn_drop (float): Dropout on attention weights. Default: 0.
        proj_drop (float): Dropout after the output projection. Default: 0.
        norm_cfg (dict): Norm after the reduction. Default: dict(type='LN', eps=1e-6).
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 embed_dims,
                 num_heads,
                 sr_ratio=1,
                 attn_drop=0.,
                 proj_drop=0.,
                 norm_cfg=dict(type='LN', eps=1e-6),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.attn_drop = attn_drop
        if sr_ratio > 1:
            self.sr = nn.Conv2d(
                embed_dims, embed_dims, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = build_norm_layer(norm_cfg, embed_dims)[1]
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def _split_heads(self, x):
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, -1).transpose(1, 2)

    def forward(self, x, qkv, hw_shape, projection):
        dims = self.embed_dims
        query = qkv[..., :dims]
        if self.sr_ratio > 1:
            batch, _, channels = x.shape
            reduced = self.sr(x.transpose(1, 2).reshape(batch, channels, *hw_shape))
            reduced = self.norm(reduced.flatten(2).transpose(1, 2))
            bias = None if projection.bias is None else projection.bias[dims:]
            key_value = F.linear(reduced, projection.weight[dims:], bias)
        else:
            key_value = qkv[..., dims:]
        key, value = key_value.chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(
            self._split_heads(query),
            self._split_heads(key),
            self._split_heads(value),
            dropout_p=self.attn_drop if self.training else 0.)
        out = out.transpose(1, 2).flatten(2)
        return self.proj_drop(self.proj(out))
