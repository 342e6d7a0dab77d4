"""The ACmix operator (Pan et al., CVPR 2022, Sec. 4.2-4.3), written once.

Stage I projects the input tokens once with a shared 1x1 projection into q, k and v
(3 x num_heads feature pieces). Stage II reuses those pieces twice:

* an attention path, whose mode plugs in from ``ATTENTION_PATHS`` (global attention with
  spatial reduction for PVT, shifted windows for Swin, sliding windows for ResNet);
* a convolution path (:class:`ShiftConvPath`): a light fully connected layer mixes the
  3 x num_heads pieces into k*k maps, then one group convolution, initialised with exact
  shift kernels and learnable afterwards, shifts and sums them (Fig. 3c). Where that
  costs no more (at most 4 heads), the two linear steps run as their product, one grouped
  convolution whose weights are computed from both on every call, in training too.

The two outputs are mixed as ``alpha * F_att + beta * F_conv`` (Eq. 13).

:class:`TokenACmix` is the operator on tokens (B, H*W, C), as transformer blocks hold
them; :class:`ACmix` wraps it for NCHW maps, in place of a 3x3 convolution.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch.nn.modules.utils import _pair

from ..errors import ConfigError
from ..ops.layout import contiguous_tokens, to_channels_first, to_channels_last
from ..ops.linear import linear, linear_of_maps, linear_of_maps_usable
from ..ops.pieces_conv import (
    narrow_pieces_conv,
    narrow_pieces_conv_fits,
    narrow_pieces_conv_usable,
    pieces_conv,
    pieces_conv_fits,
    pieces_conv_usable,
)
from ..registry import ATTENTION_PATHS, register_model
from .linear import native_linears
from .sliding_window import exporting


def shift_kernels(kernel_size):
    """Kernels that make a depthwise convolution a pure shift (Eq. 15).

    Returns a ``(k*k, k, k)`` tensor whose ``i``-th kernel is one at position
    ``(i // k, i % k)``: convolving with it moves the map by ``(i // k - k // 2,
    i % k - k // 2)`` with zero filling (Eq. 16-17).
    """
    kernels = torch.zeros(kernel_size * kernel_size, kernel_size, kernel_size)
    for i in range(kernel_size * kernel_size):
        kernels[i, i // kernel_size, i % kernel_size] = 1.
    return kernels


def to_channel_major(rows, num_pieces):
    """Rows (of a projection's weight or bias) of ``num_pieces`` pieces reordered
    channel-major: (d, piece) instead of (piece, d).

    A projection with its rows in this order gives the pieces of each channel d side
    by side, which is the layout the convolution path reads, so no transposed copy of
    the 3C-wide projection is needed. A transposed copy of the weights rather than an
    index: its backward is a transpose too, where indexing would scatter the weight
    gradient.
    """
    return rows.view(num_pieces, -1, *rows.shape[1:]).transpose(0, 1).reshape(rows.shape)


_ONEDNN = torch.backends.mkldnn.is_available()


class _ChannelsLastCopy(torch.autograd.Function):
    """A channels-last copy of an NCHW map whose gradient goes back NCHW: the layers
    before it (ReLU, BN) run their backward pass far slower on mixed layouts. Both
    copies are the native batched transpose where it is built."""

    @staticmethod
    def forward(ctx, maps):
        return to_channels_last(maps)

    @staticmethod
    def backward(ctx, grad):
        return to_channels_first(grad)


def linear_of_tokens(x, weight, bias, hw_shape, planes=False):
    """``F.linear`` of tokens (B, H*W, C) of an (H, W) map; on the CPU as oneDNN's matrix
    product of the tokens as they lie, contiguous or a view of NCHW planes (the native
    :func:`~acmix_mm.ops.linear.linear_of_maps`) or, without the native ops, for a view
    of planes in float32, oneDNN's 1x1 convolution of the map, the same product.

    torch's linear runs MKL's sgemm, whose kernels on AMD CPUs are AVX2 ones: ACmix's
    projection there ran at 130-210 GFLOP/s where the 1x1 convolution runs at 200-450
    (AMD EPYC, 2 cores, forward and backward), copy of an NCHW map to channels-last
    included; the native product reads the planes as they are and gives the input's
    gradient back as planes (64 -> 192 channels at 200x336: 14.6 against 17.2 ms).
    (Contiguous tokens, as transformer blocks hold them, gained nothing from the
    convolution: Swin- and PVT-ACmix-T's training steps within 3%.) The output is
    contiguous tokens; with ``planes``, a view of NCHW planes instead, for a consumer
    that reads planes.
    """
    if linear_of_maps_usable(x, weight):
        return linear_of_maps(x, weight, bias, planes)
    if (x.device.type != 'cpu' or x.dtype != torch.float32 or exporting() or not _ONEDNN
            or not x.transpose(1, 2).is_contiguous()):
        return F.linear(x, weight, bias)
    maps = x.transpose(1, 2).unflatten(2, hw_shape)
    if not planes:
        maps = _ChannelsLastCopy.apply(maps)
    return F.conv2d(maps, weight[:, :, None, None], bias).flatten(2).transpose(1, 2)


def reads_planes(attn_path, x):
    """Whether an attention path reads the projection of tokens ``x`` as a view of NCHW
    planes without a copy: its ``reads_planes_for(x)``, else its ``reads_planes``."""
    reads_for = getattr(attn_path, 'reads_planes_for', None)
    return reads_for(x) if reads_for is not None else getattr(attn_path, 'reads_planes', False)


def build_attention_path(cfg, embed_dims, num_heads, **kwargs):
    """Build an attention path from ``ATTENTION_PATHS`` by its ``type``.

    Looked up directly rather than through ``Registry.build``, which would search the
    caller's mmdet/mmseg scope first and warn on every layer.
    """
    cfg = dict(cfg)
    path_type = cfg.pop('type')
    path_cls = ATTENTION_PATHS.module_dict.get(path_type)
    if path_cls is None:
        raise KeyError(f'Unknown ACmix attention path {path_type!r}; registered: '
                       f'{sorted(ATTENTION_PATHS.module_dict)}.')
    return path_cls(embed_dims=embed_dims, num_heads=num_heads, **cfg, **kwargs)


class ShiftConvPath(nn.Module):
    """Convolution path of ACmix: fully connected layer, then shift-and-sum.

    The input is the Stage I projection laid out as ``num_pieces`` pieces of
    ``head_dims`` channels each (q heads, then k heads, then v heads). For every channel
    ``d`` of a piece, ``fc`` mixes the pieces into ``k*k`` maps, as the k*k Stage I
    projections of a convolution would give (Eq. 6). The group convolution
    (``head_dims`` groups of ``k*k`` inputs and ``num_heads`` outputs each) then shifts
    the maps and sums them (Eq. 7-8); its kernels start as exact shift kernels.

    Args:
        embed_dims (int): Channels of v and of the output.
        num_heads (int): Number of heads v is split into.
        kernel_size (int): Kernel size k_c of the emulated convolution. Default: 3.
        stride (int): Stride of the emulated convolution. Default: 1.
        fc_bias (bool): Bias of the fully connected layer (the official Swin-ACmix has
            one, the official ResNet-ACmix not). Default: True.
        num_pieces (int, optional): Pieces in the projection; None for
            ``3 * num_heads`` (q, k and v as wide as each other). SAN-ACmix, whose q
            and k are one head wide, has ``2 + num_heads``. Default: None.
    """

    def __init__(self, embed_dims, num_heads, kernel_size=3, stride=1, fc_bias=True,
                 num_pieces=None):
        super().__init__()
        if embed_dims % num_heads:
            raise ConfigError(f'embed_dims ({embed_dims}) must be divisible by num_heads '
                             f'({num_heads}).')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.num_pieces = num_pieces or 3 * num_heads
        self.kernel_size = kernel_size
        num_shifts = kernel_size * kernel_size
        self.fc = nn.Conv2d(self.num_pieces, num_shifts, kernel_size=1, bias=fc_bias)
        # The official code assigns the result of an in-place helper (None) to the
        # bias, so the released models have no bias here; we match that.
        self.dep_conv = nn.Conv2d(
            num_shifts * self.head_dims,
            embed_dims,
            kernel_size=kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=self.head_dims,
            bias=False)
        # Computed as one grouped conv (fc and dep_conv's product) on every call.
        self.runs_fused = self.fused_is_cheaper()
        self.reset_parameters()

    def reset_parameters(self):
        """Shift initialisation of the group convolution (Fig. 3c.II)."""
        with torch.no_grad():
            self.dep_conv.weight.copy_(
                shift_kernels(self.kernel_size).repeat(self.embed_dims, 1, 1, 1))
            bound = 1 / self.num_pieces**0.5
            nn.init.uniform_(self.fc.weight, -bound, bound)
            if self.fc.bias is not None:
                nn.init.uniform_(self.fc.bias, -bound, bound)

    def fused_weights(self):
        """The weights of the one grouped conv that equals fc, then the group conv.

        For channel d, fc mixes the pieces into k*k maps and the group conv turns
        those into heads outputs, both linear: their product is one k x k conv per
        group from the pieces (read channel-major) to the heads outputs. fc's bias,
        zero-padded with the maps at the border, becomes a fixed map: the same conv
        applied to a map of ones, with ``bias_kernel``.

        Returns:
            tuple[Tensor]: ``weight`` (C, pieces, k, k) and ``bias_kernel`` (C, 1, k, k)
            or None, in float32 or float64 (under float16 autocast too: the gradients of fc sum
            those of every fused weight, which a scaled loss would overflow in float16),
            differentiable in fc's and the group conv's parameters.
        """
        num_shifts = self.kernel_size**2
        dtype = torch.promote_types(self.dep_conv.weight.dtype, torch.float32)
        fc = self.fc.weight.view(num_shifts, self.num_pieces).to(dtype)
        dep = self.dep_conv.weight.to(dtype)  # (C, k*k, k, k)
        with torch.autocast(dep.device.type, enabled=False):
            weight = torch.einsum('csyx,st->ctyx', dep, fc)
            bias_kernel = None
            if self.fc.bias is not None:
                bias_kernel = torch.einsum('csyx,s->cyx', dep,
                                           self.fc.bias.to(dtype)).unsqueeze(1)
        return weight, bias_kernel

    def grouped_conv(self, scale=None):
        """The fused form's grouped conv, for :func:`conv_of_pieces` and
        :func:`conv_of_piece_maps`: ``weight`` and ``bias_kernel`` of
        :meth:`fused_weights` times ``scale`` (beta) where given, and the stride."""
        weight, bias_kernel = self.fused_weights()
        if scale is not None:
            weight = weight * scale
            bias_kernel = None if bias_kernel is None else bias_kernel * scale
        return weight, bias_kernel, self.dep_conv.stride

    def fused_is_cheaper(self):
        """Whether the fused conv needs at most the multiply-adds per pixel of the two
        steps (at k=3, with P pieces of d channels: 9*P*C against 9*P*d for fc plus
        81*C for the group conv; for q, k, v alike that is heads <= 4). Its backward is
        cheaper then too: one grouped conv instead of a linear layer and a grouped conv,
        and no k*k intermediate maps kept for it (at 4 heads, where the multiply-adds
        are equal, that alone decides)."""
        num_shifts = self.kernel_size**2
        fused = self.embed_dims * self.num_pieces * num_shifts
        unfused = (self.num_pieces * self.head_dims * num_shifts +
                   self.embed_dims * num_shifts**2)
        return fused <= unfused

    @property
    def reads_channel_major(self):
        """Whether :meth:`forward` needs the channel-major layout (the fused form)."""
        return self.runs_fused

    def reads_channel_major_for(self, x):
        """The layout :meth:`forward` reads without a copy for input tokens ``x``:
        piece-major where the fused form runs the native operator (which reads that),
        else :attr:`reads_channel_major`."""
        return self.reads_channel_major and not reads_piece_major(self.dep_conv, x)

    def reads_planes_for(self, x):
        """Whether :meth:`forward` reads the projection of tokens ``x`` as a view of NCHW
        planes without a copy (the dense conv, :func:`dense_conv_fits`, or the native
        planes conv, :func:`~acmix_mm.ops.pieces_conv.narrow_pieces_conv_fits`)."""
        return self.runs_fused and (
            dense_conv_fits(x, self.dep_conv.groups) or narrow_pieces_conv_fits(
                x, self.dep_conv.groups, self.num_pieces, self.embed_dims,
                self.kernel_size, self.dep_conv.stride))

    def forward(self, qkv, hw_shape, channel_major=False, scale=None):
        """Apply the path to token-layout projections.

        Args:
            qkv (Tensor): Stage I output, shape (B, H*W, num_pieces * head_dims),
                piece-major (q heads, k heads, v heads) or, with ``channel_major``,
                reordered by :func:`to_channel_major`. The fused form reads the
                latter; given the former, it lays it out itself (a copy).
            hw_shape (tuple[int]): (H, W).
            channel_major (bool): Layout of ``qkv``. Default: False.
            scale (Tensor, optional): beta, folded into the last convolution's
                weights. Default: None.

        Returns:
            Tensor: ``beta * F_conv``, shape (B, H'*W', embed_dims),
            H' = ceil(H / stride).
        """
        batch, num_tokens, _ = qkv.shape
        height, width = hw_shape
        num_shifts = self.kernel_size**2
        if self.runs_fused:
            return conv_of_pieces(qkv, hw_shape, self.num_pieces, *self.grouped_conv(scale),
                                  channel_major)
        # (B, N, d, pieces): fc mixes the pieces of each channel d.
        if channel_major:
            pieces = qkv.view(batch, num_tokens, self.head_dims, self.num_pieces)
        else:
            pieces = qkv.view(batch, num_tokens, self.num_pieces,
                              self.head_dims).transpose(2, 3)
        maps = linear(pieces, self.fc.weight.view(num_shifts, -1), self.fc.bias)
        # (B, N, d, k*k) is already channels-last for the groups (d, k*k) of dep_conv,
        # so this permute is a view, not a copy.
        maps = maps.reshape(batch, height, width, -1).permute(0, 3, 1, 2)
        weight = self.dep_conv.weight if scale is None else self.dep_conv.weight * scale
        out = F.conv2d(maps, weight, None, self.dep_conv.stride, self.dep_conv.padding,
                       groups=self.head_dims)
        return out.flatten(2).transpose(1, 2)


def native_conv_fits(conv, x):
    """Whether a fused convolution path whose grouped conv has ``conv``'s shape (the
    group conv of a :class:`ShiftConvPath`, or a :class:`FusedConvPath`'s own) runs the
    native operator on the projection of tokens ``x``."""
    return pieces_conv_fits(x.device, x.dtype, conv.groups, conv.out_channels,
                            conv.kernel_size, conv.stride)


# Groups of at most this many channels run on the CPU from the projection in either
# layout: on piece-major planes as the native narrow_pieces_conv where it fits (4 groups,
# as SAN-ACmix-19's first stage), else as one dense convolution (zeros outside each
# output's group). oneDNN's grouped convolution of narrow groups is slower than the dense
# one of `groups` times its multiply-adds: at SAN-ACmix-19's first stage (24 -> 16
# channels at 256x320) forward + backward 7.8 ms against 6.3, and the dense one needs no
# reordered copy of the projection. At 8 groups the two were even (AMD EPYC, 2 cores).
DENSE_MAX_GROUPS = 4


def dense_conv_fits(x, groups):
    """Whether :func:`conv_of_pieces` runs a grouped conv of ``groups`` groups on the
    projection ``x`` as the native narrow op or the dense conv (:data:`DENSE_MAX_GROUPS`;
    not in exports, whose graphs keep the grouped conv)."""
    return x.device.type == 'cpu' and groups <= DENSE_MAX_GROUPS and not exporting()


def reads_piece_major(conv, x):
    """Whether a fused convolution path with ``conv``'s grouped conv reads the
    projection of tokens ``x`` piece-major without a copy: the native operator's layout,
    and one the dense conv reads as well as the other."""
    return native_conv_fits(conv, x) or dense_conv_fits(x, conv.groups)


def dense_weight(weight, groups, channel_major=False):
    """A grouped conv's ``weight`` (O, P, k, k) as the dense conv's (O, P * groups, k, k)
    with the same outputs: output o reads channel o // (O / groups) of each of the P
    pieces, whose input channels are p * groups + g (piece-major) or g * P + p
    (``channel_major``)."""
    outputs, pieces = weight.shape[:2]
    member = torch.eye(groups, dtype=weight.dtype, device=weight.device)
    member = member.repeat_interleave(outputs // groups, 0)  # (O, groups)
    dense = weight[:, :, None] * member[:, None, :, None, None]  # (O, P, groups, k, k)
    if channel_major:
        dense = dense.transpose(1, 2)
    return dense.reshape(outputs, pieces * groups, *weight.shape[2:])


def conv_of_pieces(qkv, hw_shape, num_pieces, weight, bias_kernel, stride,
                   channel_major=False):
    """The convolution path as one grouped conv from the projection's pieces: the
    native operator where :func:`~acmix_mm.ops.pieces_conv_usable` (it reads the
    projection piece-major); for narrow groups where :func:`dense_conv_fits`, the native
    :func:`~acmix_mm.ops.narrow_pieces_conv` on piece-major planes or else the dense conv
    (either layout); else ``F.conv2d`` on channels-last maps (channel-major).

    Args:
        qkv (Tensor): The projection, (B, H*W, num_pieces * d), piece-major or (with
            ``channel_major``) channel-major; given the other layout than the one the
            convolution reads, it is laid out here (a copy).
        hw_shape (tuple[int]): (H, W).
        num_pieces (int): Pieces in the projection.
        weight (Tensor): (C, num_pieces, k, k), one group per channel d.
        bias_kernel (Tensor, optional): (C, 1, k, k): fc's bias, zero-padded at the
            border with the maps, as the same conv applied to a map of ones.
        stride (int | tuple[int]): Stride of the conv.
        channel_major (bool): Layout of ``qkv``. Default: False.

    Returns:
        Tensor: (B, H'*W', C).
    """
    batch, num_tokens, channels = qkv.shape
    head_dims = channels // num_pieces
    height, width = hw_shape
    maps = qkv.transpose(1, 2).unflatten(2, hw_shape)  # a view of either layout
    if not channel_major and narrow_pieces_conv_usable(maps, weight, stride):
        # planes as they are (the projection written as planes)
        out = narrow_pieces_conv(maps, weight)
        if bias_kernel is not None:
            out = out + bias_map(bias_kernel, hw_shape, stride, qkv, qkv.dtype)
    elif pieces_conv_usable(qkv, weight, stride):  # no autocast: in qkv's dtype
        if channel_major:  # the native op reads piece-major
            qkv = qkv.view(batch, num_tokens, head_dims, num_pieces).transpose(2, 3).reshape(
                qkv.shape)
        out_shape = tuple(-(-size // step) for size, step in zip(hw_shape, _pair(stride)))
        out = pieces_conv(qkv, weight, hw_shape, stride).transpose(1, 2).unflatten(2, out_shape)
        if bias_kernel is not None:
            out = out + bias_map(bias_kernel, hw_shape, stride, qkv, qkv.dtype)
    elif dense_conv_fits(qkv, head_dims):
        # NCHW maps as a view of either contiguous tokens or planes
        out = conv_of_piece_maps(maps, dense_weight(weight, head_dims, channel_major),
                                 bias_kernel, stride)
    else:
        if not channel_major:
            qkv = qkv.view(batch, num_tokens, num_pieces, head_dims).transpose(2, 3).reshape(
                qkv.shape)
        # Channels-last maps: each group's pieces are adjacent, no copy.
        maps = qkv.reshape(batch, height, width, -1).permute(0, 3, 1, 2)
        out = conv_of_piece_maps(maps, weight, bias_kernel, stride)
    return out.flatten(2).transpose(1, 2)


def planes_conv_weight(conv_path, qkv, hw_shape, channel_major, scale=None):
    """The grouped conv's weight of a convolution path (``ShiftConvPath``'s fused form,
    ``FusedConvPath``) where its forward would run the native
    :func:`~acmix_mm.ops.narrow_pieces_conv` on the projection ``qkv`` (tokens of
    ``hw_shape``) as it lies, with no bias map: for an attention path that adds the
    convolution path itself (its ``adds_conv_for``). Else None. ``scale`` as the path's
    forward takes it."""
    if not conv_path.runs_fused or channel_major:
        return None
    weight, bias_kernel, stride = conv_path.grouped_conv(scale)
    maps = qkv.transpose(1, 2).unflatten(2, hw_shape)
    if bias_kernel is not None or not narrow_pieces_conv_usable(maps, weight, stride):
        return None
    return weight


def conv_of_piece_maps(maps, weight, bias_kernel, stride):
    """The convolution path as one grouped conv of NCHW maps of the projection whose
    channels are channel-major (the pieces of each channel d adjacent: the groups' own
    inputs). Args as :func:`conv_of_pieces`; returns (B, C, H', W')."""
    dtype = torch.get_autocast_dtype(maps.device.type) if \
        torch.is_autocast_enabled(maps.device.type) else maps.dtype
    out = F.conv2d(maps, weight.to(dtype), None, stride, weight.shape[-1] // 2,
                   groups=maps.shape[1] // weight.shape[1])
    if bias_kernel is not None:
        out = out + bias_map(bias_kernel, maps.shape[2:], stride, maps, dtype)
    return out


def bias_map(bias_kernel, hw_shape, stride, like, dtype):
    """fc's bias through the grouped conv: ``bias_kernel`` applied to a map of ones
    (zero-padded at the border as the maps are), (1, C, H', W')."""
    ones = like.new_ones(1, 1, *hw_shape, dtype=dtype)
    return F.conv2d(ones, bias_kernel.to(dtype), None, stride, bias_kernel.shape[-1] // 2)


class FusedConvPath(nn.Module):
    """The inference form of a :class:`ShiftConvPath`, swapped in for it (as RepVGG's
    ``switch_to_deploy``): fc, the shift group conv and beta folded into one fixed
    grouped conv (:meth:`ShiftConvPath.fused_weights`), a copy, so training the
    original afterwards would not change it.

    Args:
        conv_path (ShiftConvPath): The path to fold.
        scale (Tensor): beta, folded into the weights.
    """
    # Reads the projection as ShiftConvPath's fused training form does.
    reads_channel_major = True

    def reads_channel_major_for(self, x):
        """As :meth:`ShiftConvPath.reads_channel_major_for`."""
        return not reads_piece_major(self.conv, x)

    def reads_planes_for(self, x):
        """As :meth:`ShiftConvPath.reads_planes_for`."""
        return dense_conv_fits(x, self.conv.groups) or narrow_pieces_conv_fits(
            x, self.conv.groups, self.num_pieces, self.conv.out_channels,
            self.conv.kernel_size, self.conv.stride)

    def __init__(self, conv_path, scale):
        super().__init__()
        with torch.no_grad():
            weight, bias_kernel = conv_path.fused_weights()
            dep = conv_path.dep_conv
            self.num_pieces = conv_path.num_pieces
            self.conv = nn.Conv2d(
                self.num_pieces * conv_path.head_dims,
                conv_path.embed_dims,
                conv_path.kernel_size,
                stride=dep.stride,
                padding=dep.padding,
                groups=conv_path.head_dims,
                bias=False).to(dep.weight)
            self.conv.weight.copy_(scale * weight)
            self.register_buffer(
                'bias_kernel',
                None if bias_kernel is None else (scale * bias_kernel).to(dep.weight))

    # Always one grouped conv (as ShiftConvPath's fused form).
    runs_fused = True

    def grouped_conv(self, scale=None):
        """As :meth:`ShiftConvPath.grouped_conv`; beta is folded in already."""
        return self.conv.weight, self.bias_kernel, self.conv.stride

    def forward(self, qkv, hw_shape, channel_major=False, scale=None):
        """As :meth:`ShiftConvPath.forward`; ``scale`` (beta) is already folded in and
        not applied again."""
        return conv_of_pieces(qkv, hw_shape, self.num_pieces, *self.grouped_conv(),
                              channel_major)


class TokenACmix(BaseModule):
    """ACmix on tokens: shared projection, attention path, convolution path.

    Args:
        embed_dims (int): Output channels C (and channels of q, k, v).
        num_heads (int): Number of attention heads N.
        attn_path (dict): Config of the attention path, built from ``ATTENTION_PATHS``
            with ``embed_dims`` and ``num_heads`` filled in, e.g.
            ``dict(type='SpatialReductionAttentionPath', sr_ratio=8)``.
        in_dims (int, optional): Input channels; ``embed_dims`` when None.
            Default: None.
        qk_dims (int, optional): Channels of q and of k, a multiple of the head width
            ``embed_dims // num_heads``; ``embed_dims`` when None. SAN-ACmix projects q
            and k to one head's width and v to ``embed_dims`` (paper Appendix C).
            Default: None.
        with_conv_path (bool): False leaves the convolution path and the rates out:
            the layer is then its attention path alone, i.e. the original attention
            model (SAN, or the "attention only" row of Table 6). Default: True.
        kernel_conv (int): Kernel size k_c of the convolution path. Default: 3.
        stride (int): Stride of the convolution path; the attention path must be built
            with the same one. Default: 1.
        qkv_bias (bool): Bias of the shared projection. Default: True.
        fc_bias (bool): Bias of the convolution path's fully connected layer.
            Default: True.
        rate_init (tuple[float]): Initial (alpha, beta). Default: (0.5, 0.5), as in the
            official code; (1.0, 0.0) makes a fresh ACmix compute exactly its
            attention path, i.e. the pretrained attention model.
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 embed_dims,
                 num_heads,
                 attn_path,
                 in_dims=None,
                 qk_dims=None,
                 with_conv_path=True,
                 kernel_conv=3,
                 stride=1,
                 qkv_bias=True,
                 fc_bias=True,
                 rate_init=(0.5, 0.5),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if embed_dims % num_heads:
            raise ConfigError(f'embed_dims ({embed_dims}) must be divisible by num_heads '
                             f'({num_heads}).')
        head_dims = embed_dims // num_heads
        qk_dims = qk_dims or embed_dims
        if qk_dims % head_dims:
            raise ConfigError(f'qk_dims ({qk_dims}) must be a multiple of the head width '
                             f'({head_dims}).')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.qk_dims = qk_dims
        self.head_dims = head_dims
        self.num_pieces = 2 * qk_dims // head_dims + num_heads
        self.rate_init = tuple(rate_init)
        # Stage I: one projection whose output both paths share.
        self.qkv = nn.Linear(in_dims or embed_dims, 2 * qk_dims + embed_dims, bias=qkv_bias)
        path_kwargs = {} if qk_dims == embed_dims else dict(qk_dims=qk_dims)
        self.attn_path = build_attention_path(attn_path, embed_dims, num_heads,
                                              **path_kwargs)
        self.conv_path = None
        if with_conv_path:
            self.conv_path = ShiftConvPath(
                embed_dims,
                num_heads,
                kernel_conv,
                stride,
                fc_bias,
                num_pieces=self.num_pieces)
            self.alpha = nn.Parameter(torch.empty(1))
            self.beta = nn.Parameter(torch.empty(1))
            self.reset_rates()
        native_linears(self)  # oneDNN's products on the CPU (layers/linear.py)

    def reset_rates(self):
        """Set alpha and beta to ``rate_init``."""
        with torch.no_grad():
            self.alpha.fill_(self.rate_init[0])
            self.beta.fill_(self.rate_init[1])

    def reset_acmix_parameters(self):
        """Shift kernels and rates back to their initial values (a backbone's generic
        init, e.g. Kaiming on every Conv2d, must not leave them overwritten)."""
        if isinstance(self.conv_path, ShiftConvPath):
            self.conv_path.reset_parameters()
            self.reset_rates()

    def init_weights(self):
        super().init_weights()
        self.reset_acmix_parameters()

    def forward(self, x, hw_shape, **path_kwargs):
        """Forward on tokens.

        Args:
            x (Tensor): Shape (B, H*W, C_in).
            hw_shape (tuple[int]): (H, W) of the token grid.
            **path_kwargs: Passed to the attention path (e.g. Swin's ``shift_size``).

        Returns:
            Tensor: Shape (B, H'*W', C), H' = ceil(H / stride).
        """
        # Paths that read a channel-major projection (their ``channel_major``) get one,
        # and so does a fused convolution path; the weights keep the usual q, k, v row
        # order.
        path_channel_major = self.attn_path.channel_major
        planes = reads_planes(self.attn_path, x)
        if (planes and self.conv_path is not None and not self.conv_path.reads_planes_for(x)
                and getattr(self.attn_path, 'reads_tokens_natively', False)):
            # tokens for both paths rather than a token copy for the convolution path
            planes = False
        if self.conv_path is None:
            if planes:
                # piece-major: q, k and v are then whole planes, no copy
                return self.attn_path(x, self.project(x, False, hw_shape, planes=True),
                                      hw_shape, self.qkv, channel_major=False, **path_kwargs)
            return self.attn_path(x, self.project(x, path_channel_major, hw_shape), hw_shape,
                                  self.qkv, **path_kwargs)
        conv_channel_major = self.conv_path.reads_channel_major_for(x)
        if getattr(self.attn_path, 'reads_either_layout', False):
            # The path follows the convolution path's layout: no copy for either.
            path_channel_major = conv_channel_major
            path_kwargs = dict(path_kwargs, channel_major=conv_channel_major)
        # A path that reads planes gets them, and so does F.conv2d's convolution path
        # (channel-major planes are its NCHW input, piece-major ones the dense conv's);
        # the native one gets a copy as tokens, narrower than the copy of the input that
        # tokens would take.
        qkv = self.project(x, path_channel_major or conv_channel_major, hw_shape, planes)
        path_qkv = qkv
        if planes and not conv_channel_major and not self.conv_path.reads_planes_for(x):
            qkv = contiguous_tokens(qkv)
        if conv_channel_major and not path_channel_major:
            path_qkv = qkv.view(*qkv.shape[:2], self.conv_path.head_dims,
                                self.conv_path.num_pieces).transpose(2, 3).reshape(
                                    qkv.shape)
        # alpha and beta are folded into each path's last weights (Eq. 13 without two
        # products of the whole map, which the backward pass would keep). An attention
        # path that adds the convolution path itself gets its weight (the sum and its
        # gradient then take no passes of their own).
        if path_qkv is qkv and getattr(self.attn_path, 'adds_conv_for', None) is not None \
                and self.attn_path.adds_conv_for(qkv, path_channel_major):
            conv_weight = planes_conv_weight(self.conv_path, qkv, hw_shape, conv_channel_major,
                                             scale=self.beta)
            if conv_weight is not None:
                return self.attn_path(x, qkv, hw_shape, self.qkv, out_scale=self.alpha,
                                      conv_weight=conv_weight, **path_kwargs)
        # The attention path runs last, so its backward runs first: its larger working
        # set is freed before the convolution path's gradient of the projection exists.
        f_conv = self.conv_path(qkv, hw_shape, path_channel_major or conv_channel_major,
                                scale=self.beta)
        f_att = self.attn_path(x, path_qkv, hw_shape, self.qkv, out_scale=self.alpha,
                               **path_kwargs)
        return f_att + f_conv

    def project(self, x, channel_major=False, hw_shape=None, planes=False):
        """Stage I: the shared projection of tokens ``x``, in the projection's own row
        order (q heads, k heads, v heads) or channel-major (the pieces of each channel
        side by side; see :func:`to_channel_major`). Given the map's ``hw_shape``, the
        product runs as :func:`linear_of_tokens` (``planes`` as there)."""
        weight, bias = self.qkv.weight, self.qkv.bias
        if channel_major:
            weight = to_channel_major(weight, self.num_pieces)
            bias = None if bias is None else to_channel_major(bias, self.num_pieces)
        if hw_shape is None:
            return linear(x, weight, bias)
        return linear_of_tokens(x, weight, bias, hw_shape, planes)

    def fuse_conv_path(self):
        """Inference: swap in the convolution path and beta folded into one grouped
        conv (:class:`FusedConvPath`)."""
        self.conv_path = FusedConvPath(self.conv_path, self.beta)


@register_model
class ACmix(TokenACmix):
    """ACmix with sliding-window attention on NCHW maps (the official ResNet-ACmix).

    Usable in place of a ``k_conv x k_conv`` convolution in any OpenMMLab model:
    ``MODELS.build(dict(type='ACmix', in_channels=64, out_channels=64))``. The
    attention path attends over ``kernel_att x kernel_att`` windows with relative
    position encoding from normalised coordinates and reflection padding; the
    convolution path emulates a ``kernel_conv x kernel_conv`` convolution.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_att (int): Attention window side. Default: 7.
        head (int): Attention heads. Default: 4.
        kernel_conv (int): Kernel of the convolution path. Default: 3.
        stride (int): 1 or 2; queries and convolution are strided alike, the output
            is ceil(H / stride) x ceil(W / stride). Default: 1.
        dilation (int): Only 1, as in the released models. Default: 1.
        rate_init (tuple[float]): Initial (alpha, beta). Default: (0.5, 0.5).
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 in_channels,
                 out_channels,
                 kernel_att=7,
                 head=4,
                 kernel_conv=3,
                 stride=1,
                 dilation=1,
                 rate_init=(0.5, 0.5),
                 init_cfg=None):
        if dilation != 1:
            raise ConfigError(f'ACmix supports dilation 1 only, got {dilation}.')
        if out_channels % head:
            raise ConfigError(f'out_channels ({out_channels}) must be divisible by head '
                             f'({head}).')
        super().__init__(
            embed_dims=out_channels,
            num_heads=head,
            attn_path=dict(
                type='SlidingWindowAttentionPath', kernel_size=kernel_att, stride=stride),
            in_dims=in_channels,
            kernel_conv=kernel_conv,
            stride=stride,
            fc_bias=False,
            rate_init=rate_init,
            init_cfg=init_cfg)
        self.stride = stride

    def forward(self, x):
        """(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))."""
        if exporting() and self.conv_path is not None and self.conv_path.runs_fused:
            return self.exported_forward(x)
        batch, _, height, width = x.shape
        out = super().forward(x.flatten(2).transpose(1, 2), (height, width))
        out_shape = (-(-height // self.stride), -(-width // self.stride))
        return out.transpose(1, 2).reshape(batch, -1, *out_shape)

    def exported_forward(self, x):
        """:meth:`forward` in the form exports take, for a fused convolution path.

        ONNX has no strided views: every reordering of the 3C-wide projection between
        the two paths' layouts is a Transpose, and ONNX Runtime's 5-d transposes took
        about 40% of ResNet-ACmix-50's time there. So the projection is made twice, a
        cheaper 1x1 product there: as a 1x1 conv of the map with channel-major rows,
        which is the grouped conv's input as it is (NCHW, no reorder either way), and
        on the tokens in the projection's own order, whose q, k and v the attention
        path splits without a copy.
        """
        batch, _, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        f_att = self.attn_path(tokens, self.project(tokens), (height, width), self.qkv,
                               out_scale=self.alpha, channel_major=False)
        out_shape = (-(-height // self.stride), -(-width // self.stride))
        f_att = f_att.transpose(1, 2).reshape(batch, -1, *out_shape)
        weight, bias = (None if t is None else to_channel_major(t, self.num_pieces)
                        for t in (self.qkv.weight, self.qkv.bias))
        maps = F.conv2d(x, weight[:, :, None, None], bias)
        return f_att + conv_of_piece_maps(maps, *self.conv_path.grouped_conv(self.beta))


def fuse_acmix(model, only_cheaper=True):
    """Fuse the convolution path of the ACmix layers of ``model`` for inference.

    Args:
        model (nn.Module): Any model holding ACmix layers.
        only_cheaper (bool): Fuse a layer only where the fused conv needs no more
            multiply-adds (heads <= 4); False fuses all. Default: True.

    Returns:
        int: The number of layers fused.
    """
    fused = 0
    for module in model.modules():
        conv_path = getattr(module, 'conv_path', None)
        if isinstance(module, TokenACmix) and isinstance(conv_path, ShiftConvPath) and (
                not only_cheaper or conv_path.fused_is_cheaper()):
            module.fuse_conv_path()
            fused += 1
    return fused
