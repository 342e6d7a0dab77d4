"""Attention modes for the ACmix operator.

Each path takes ``(x, qkv, hw_shape, projection, out_scale)``: the block input tokens,
the shared Stage I projection of them, the token grid, the projection layer itself (so
that a mode that attends to other tokens than the queries can project those with the
very same weights) and ACmix's alpha, and returns ``alpha * F_att`` in the token layout
(B, H*W, C). Paths that end in an output projection fold alpha into its weights
(:func:`scaled_linear`), so that no product of the whole map is computed or kept for
the backward pass.

Each path declares the layout of ``qkv`` it reads in ``channel_major``: False for the
projection's own order (q heads, k heads, v heads), True for the channel-major order
(the pieces of each channel side by side, see ``acmix.to_channel_major``),
which the convolution path reads without a copy. A path that also declares
``reads_either_layout`` takes the layout as its ``channel_major`` argument, and gets the
one the convolution path reads (piece-major for the native operator).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule

from ..errors import ConfigError
from ..ops.linear import linear as native_linear
from ..ops.linear import linear_of_maps, linear_of_maps_usable
from ..registry import ATTENTION_PATHS
from .batch_norm import build_norm
from .patchwise import patch_aggregate, patch_hidden
from .sliding_window import (
                             adds_conv_natively,
                             local_attention,
                             native_local_attention,
                             native_local_attention_plus_conv,
                             native_usable,
)
from .window_attention import partition_windows, window_attention


def scaled_linear(x, linear, scale=None):
    """``scale * linear(x)`` with ``scale`` folded into the weights and bias.

    The same output as multiplying afterwards, but the product of the whole output is
    neither computed nor kept for the backward pass: the gradient of ``scale`` comes
    from the weight gradient that the layer computes anyway.
    """
    if scale is None:
        return linear(x)
    bias = None if linear.bias is None else linear.bias * scale
    return native_linear(x, linear.weight * scale, bias)


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
        norm_cfg (dict): Norm after the reduction. Default: dict(type='LN') (eps 1e-5,
            as the official PVT v1).
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 embed_dims,
                 num_heads,
                 sr_ratio=1,
                 attn_drop=0.,
                 proj_drop=0.,
                 norm_cfg=dict(type='LN'),
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

    # Queries (and, without reduction, keys and values) are read as strided views.
    channel_major = True

    def _split_heads(self, x):
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, -1).transpose(1, 2)

    def forward(self, x, qkv, hw_shape, projection, out_scale=None):
        dims, heads = self.embed_dims, self.num_heads
        batch, length, _ = qkv.shape
        # Channel-major (B, N, d, 3 * heads) -> (B, N, 3 * heads, d): q, k, v heads.
        pieces = qkv.view(batch, length, dims // heads, 3 * heads).transpose(2, 3)
        query = pieces[:, :, :heads].transpose(1, 2)
        if self.sr_ratio > 1:
            batch, _, channels = x.shape
            reduced = self.sr(x.transpose(1, 2).reshape(batch, channels, *hw_shape))
            reduced = self.norm(reduced.flatten(2).transpose(1, 2))
            bias = None if projection.bias is None else projection.bias[dims:]
            key, value = native_linear(reduced, projection.weight[dims:], bias).chunk(
                2, dim=-1)
            key, value = self._split_heads(key), self._split_heads(value)
        else:
            key = pieces[:, :, heads:2 * heads].transpose(1, 2)
            value = pieces[:, :, 2 * heads:].transpose(1, 2)
        out = F.scaled_dot_product_attention(
            query, key, value, dropout_p=self.attn_drop if self.training else 0.)
        out = out.transpose(1, 2).flatten(2)
        return self.proj_drop(scaled_linear(out, self.proj, out_scale))


@ATTENTION_PATHS.register_module()
class SlidingWindowAttentionPath(BaseModule):
    """Sliding-window attention with relative position encoding (ResNet-ACmix).

    Each query attends to the ``kernel_size x kernel_size`` window around it on the
    reflection-padded map, as in SASA and the official ResNet-ACmix. Position encodings
    are a learnt projection of normalised (x, y) coordinates in [-1, 1]; the logit of a
    query and a key adds ``q . (pe(query) - pe(key))``. The query's own term is the same
    for all its keys and cancels in the softmax (so does the projection's bias), which
    leaves ``q . (k - pe(key))``: the encoding folds into the keys and the attention
    runs as plain local attention: the native operator where it is built (see
    ``acmix_mm.ops``: C++ on CPU, Triton on CUDA), else :func:`local_attention`.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Number of heads.
        kernel_size (int): Window side k_att. Default: 7.
        stride (int): Take queries every ``stride`` pixels. Default: 1.
        block_size (int): Query block side of :func:`local_attention`, the PyTorch path
            (speed only).
            Default: 8.
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 embed_dims,
                 num_heads,
                 kernel_size=7,
                 stride=1,
                 block_size=8,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.kernel_size = kernel_size
        self.stride = stride
        self.block_size = block_size
        # Shared by the heads, as the official conv_p (a 1x1 conv from 2 channels).
        self.position_proj = nn.Linear(2, self.head_dims, bias=False)

    # q, k and v heads are strided views of the channel-major projection, which the
    # (fused) convolution path reads too: the attention gathers from the views, so
    # neither path copies the projection. The path reads the other layout as well (the
    # native convolution path reads piece-major): TokenACmix then passes that.
    channel_major = True
    reads_either_layout = True

    # The native CPU operator packs tokens as well as planes: TokenACmix gives it planes
    # only where the convolution path reads them too.
    reads_tokens_natively = True

    def reads_planes_for(self, x):
        """Whether the path reads the projection of tokens ``x`` as a view of NCHW planes
        without a copy: where the native CPU operator serves (it copies rows of planes
        where it would transpose tokens)."""
        return x.device.type == 'cpu' and native_usable(x)

    def position_encoding(self, hw_shape, like):
        """pe(p) without bias for every pixel p: shape (H*W, head_dims). Where the
        projection ``like`` is a view of planes and the native product serves, a view of
        (head_dims, H*W) planes, the layout in which the native operator reads it."""
        height, width = hw_shape
        loc_y, loc_x = torch.meshgrid(
            torch.linspace(-1.0, 1.0, height, device=like.device, dtype=like.dtype),
            torch.linspace(-1.0, 1.0, width, device=like.device, dtype=like.dtype),
            indexing='ij')
        coords = torch.stack([loc_x, loc_y], dim=-1).view(1, -1, 2)
        weight = self.position_proj.weight
        if (not like.is_contiguous() and like.transpose(1, 2).is_contiguous()
                and linear_of_maps_usable(coords, weight)):
            # no transposed copy of it either way (forward or its gradient)
            return linear_of_maps(coords, weight, None, True).squeeze(0)
        return self.position_proj(coords[0])

    def attention_flops(self, batch, hw_shape):
        """Multiply-adds of q.k and attention.v over the k*k window of each query."""
        out_pixels = -(-hw_shape[0] // self.stride) * -(-hw_shape[1] // self.stride)
        return 2 * batch * out_pixels * self.kernel_size**2 * self.embed_dims

    def adds_conv_for(self, qkv, channel_major):
        """Whether :meth:`forward` adds a convolution path on the projection ``qkv``
        itself (its ``conv_weight``): the native operator of the layer at stride 1
        (:func:`~acmix_mm.layers.sliding_window.adds_conv_natively`)."""
        return adds_conv_natively(qkv, self.stride, channel_major)

    def forward(self, x, qkv, hw_shape, projection, out_scale=None, channel_major=True,
                conv_weight=None):
        # The native operator where it serves (it packs and pads the keys itself),
        # else blocks of queries in PyTorch. Either way the encodings are subtracted
        # from the keys and alpha applied to the values as they are gathered: no key map
        # or scaled output map is made or kept. With conv_weight (where adds_conv_for),
        # the operator adds the convolution path too.
        if conv_weight is not None:
            return native_local_attention_plus_conv(
                qkv, hw_shape, self.num_heads, self.kernel_size,
                self.position_encoding(hw_shape, qkv), out_scale, conv_weight)
        attention, options = local_attention, dict(block=self.block_size)
        if native_usable(qkv):
            attention, options = native_local_attention, {}
        out, _ = attention(
            qkv,
            hw_shape,
            self.num_heads,
            self.kernel_size,
            self.stride,
            key_offset=self.position_encoding(hw_shape, qkv),
            out_scale=out_scale,
            channel_major=channel_major,
            **options)
        return out.flatten(2)


@ATTENTION_PATHS.register_module()
class ShiftedWindowAttentionPath(BaseModule):
    """(Shifted) window attention with relative position bias (Swin), as an ACmix path.

    Takes the shared projection of the map that the Swin block has already padded to
    window multiples and cyclically shifted, attends inside each window (with the mask
    that keeps the regions a cyclic shift brought together apart), then applies the
    output projection. The convolution path works on the same shifted map.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Number of heads.
        window_size (int): Window side. Default: 7.
        attn_drop (float): Dropout on attention weights. Default: 0.
        proj_drop (float): Dropout after the output projection. Default: 0.
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 embed_dims,
                 num_heads,
                 window_size=7,
                 attn_drop=0.,
                 proj_drop=0.,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.window_size = window_size
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1)**2, num_heads))
        coords = torch.stack(
            torch.meshgrid(torch.arange(window_size), torch.arange(window_size),
                           indexing='ij')).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]) + window_size - 1
        # Recomputed, so not stored in checkpoints.
        self.register_buffer(
            'relative_position_index',
            relative[0] * (2 * window_size - 1) + relative[1],
            persistent=False)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    # The windows are a copy of the projection anyway, so the path takes it in the
    # layout the convolution path reads without a copy (see ShiftConvPath).
    channel_major = True

    def init_weights(self):
        super().init_weights()
        nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)

    def _shift_mask(self, hw_shape, shift_size, like):
        """(num_windows, N, N) mask: 0 within a region, -100 across (as Swin)."""
        height, width = hw_shape
        window = self.window_size
        regions = torch.zeros(height, width, device=like.device)
        cuts = (slice(0, -window), slice(-window, -shift_size), slice(-shift_size, None))
        for i, rows in enumerate(cuts):
            for j, cols in enumerate(cuts):
                regions[rows, cols] = 3 * i + j
        regions = regions.view(height // window, window, width // window, window)
        regions = regions.transpose(1, 2).reshape(-1, window * window)
        mask = regions[:, None, :] != regions[:, :, None]
        return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(
            mask, -100.0)

    def forward(self, x, qkv, hw_shape, projection, out_scale=None, shift_size=0):
        batch = qkv.shape[0]
        height, width = hw_shape
        window = self.window_size
        rows, cols = height // window, width // window
        head_dims = self.embed_dims // self.num_heads
        bias = self.relative_position_bias_table[self.relative_position_index]
        bias = bias.permute(2, 0, 1).unsqueeze(0)  # (1, heads, N, N)
        if shift_size > 0:
            bias = bias + self._shift_mask(hw_shape, shift_size, qkv)[:, None]
        dropout = self.attn_drop if self.training else 0.
        if qkv.requires_grad and torch.is_grad_enabled() and not dropout and (
                not torch.is_autocast_enabled(qkv.device.type)):
            # Training: keep the projection, not a windowed copy, for backward.
            out = window_attention(qkv, bias.to(qkv.dtype), (rows, cols), window,
                                   self.num_heads)
        else:
            # (3, B * windows, heads, N, d): 4-D inputs take the fused attention kernel
            # (a 5-D batch falls back to the slow reference one).
            windows = partition_windows(qkv, (rows, cols), window, self.num_heads)
            if shift_size > 0 and batch > 1:
                bias = bias.repeat(batch, 1, 1, 1)
            out = F.scaled_dot_product_attention(
                *windows, attn_mask=bias.to(qkv.dtype), dropout_p=dropout)
        # (B, windows, heads, N, d) -> (B, H*W, C)
        out = out.view(batch, rows, cols, self.num_heads, window, window, head_dims)
        out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch, height * width, -1)
        return self.proj_drop(scaled_linear(out, self.proj, out_scale))


@ATTENTION_PATHS.register_module()
class PatchwiseAttentionPath(BaseModule):
    """SAN's patchwise self-attention (Zhao et al., CVPR 2020), as an ACmix attention path.

    Each pixel's attention weights come from its query and the whole ``k x k`` patch of
    keys around it, through two 1x1 layers with norms (G = C / ``share_planes`` weight
    channels for each of the k*k patch positions); the values of the patch are summed
    with them, value channel c taking weight channel c mod G. Maps are padded by
    reflection; no position encoding, as SAN. Runs band by band without keeping
    unfolded patches (see :mod:`acmix_mm.layers.patchwise`).

    Args:
        embed_dims (int): Channels C of v and of the output.
        num_heads (int): Pieces v is split into for the convolution path; patchwise
            attention itself groups channels by ``share_planes`` instead.
        qk_dims (int, optional): Channels r of q and k; ``embed_dims`` when None
            (SAN uses C / 4). Default: None.
        kernel_size (int): Patch side k_a. Default: 7.
        share_planes (int): Value channels sharing one weight channel. Default: 8.
        norm_cfg (dict): Config of both norms (a 2-d norm). Default: dict(type='BN').
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 embed_dims,
                 num_heads,
                 qk_dims=None,
                 kernel_size=7,
                 share_planes=8,
                 norm_cfg=dict(type='BN'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if embed_dims % share_planes:
            raise ConfigError(f'embed_dims ({embed_dims}) must be divisible by '
                             f'share_planes ({share_planes}).')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.qk_dims = qk_dims or embed_dims
        self.kernel_size = kernel_size
        weight_dims = embed_dims // share_planes
        patch_dims = self.qk_dims * (kernel_size**2 + 1)
        self.norm_in = build_norm(norm_cfg, patch_dims)
        self.fc1 = nn.Linear(patch_dims, weight_dims, bias=False)
        self.norm_mid = build_norm(norm_cfg, weight_dims)
        self.fc2 = nn.Linear(weight_dims, kernel_size**2 * weight_dims)

    def attention_flops(self, batch, hw_shape):
        """Multiply-adds of summing the k*k values of each patch with their weights (the
        layers that make the weights are counted as the linear layers they are)."""
        return batch * hw_shape[0] * hw_shape[1] * self.embed_dims * self.kernel_size**2

    # The maps are a copy of the projection in either layout, so the path reads the one
    # the convolution path reads (fused in SAN-ACmix: channel-major for F.conv2d,
    # piece-major for the native operator) and neither copies it again.
    channel_major = True
    reads_either_layout = True
    # Without a convolution path, a piece-major projection as a view of NCHW planes
    # (acmix.linear_of_tokens) is the maps as they are.
    reads_planes = True

    def forward(self, x, qkv, hw_shape, projection, out_scale=None, channel_major=True):
        batch, length, channels = qkv.shape
        piece_dims = self.embed_dims // self.num_heads
        # Channel-major (B, N, d, pieces) or piece-major (B, N, pieces, d) -> piece-major
        # maps (B, pieces * d, H, W).
        if channel_major:
            maps = qkv.reshape(batch, length, piece_dims, -1).permute(0, 3, 2, 1)
        else:
            maps = qkv.reshape(batch, length, -1, piece_dims).permute(0, 2, 3, 1)
        maps = maps.reshape(batch, channels, *hw_shape)
        query, key, value = maps.split([self.qk_dims, self.qk_dims, self.embed_dims], 1)
        hidden = patch_hidden(query, key, self.norm_in, self.fc1.weight, self.kernel_size)
        hidden = F.relu(self.norm_mid(hidden))
        # The output scale folded into fc2 (the sum is linear in the weights fc2 makes):
        # no product of the whole output, forward or backward.
        fc2_weight, fc2_bias = self.fc2.weight, self.fc2.bias
        if out_scale is not None:
            fc2_weight, fc2_bias = fc2_weight * out_scale, fc2_bias * out_scale
        out = patch_aggregate(value, hidden, fc2_weight, fc2_bias, self.kernel_size)
        return out.flatten(2).transpose(1, 2)
